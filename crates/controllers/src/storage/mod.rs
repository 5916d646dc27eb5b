//! Storage controllers: pools, PersistentVolumeClaims, VolumeSnapshots, DataVolumes, StorageProfiles.
