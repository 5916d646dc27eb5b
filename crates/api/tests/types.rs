//! Typed decoding, defaulting and validation of every kind, driven by the seed manifests
//! (written here as JSON, as kubectl sends them) and one test per validation rule.

use api::types::{self, normalize, parse_duration, parse_quantity, Normalized};
use api::{admit, registry, ErrorKind, FieldValidation};
use serde_json::{json, Value};
use std::time::Duration;

fn norm(obj: Value) -> Normalized {
    let kind = obj["kind"].as_str().expect("kind").to_string();
    normalize(&kind, obj).expect("decodes")
}

/// Merges `patch` into `base` (RFC 7386 without deletions), to build "input plus defaults".
fn merged(mut base: Value, patch: Value) -> Value {
    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    merge(&mut base, patch);
    base
}

fn fields(n: &Normalized) -> Vec<&str> {
    n.causes.iter().map(|c| c.field.as_str()).collect()
}

fn assert_invalid(obj: Value, field: &str) -> Normalized {
    let n = norm(obj);
    assert!(
        n.causes.iter().any(|c| c.field == field),
        "expected a cause at {field}, got {:?}",
        n.causes
    );
    n
}

fn assert_valid(obj: Value) -> Normalized {
    let n = norm(obj);
    assert!(n.causes.is_empty(), "unexpected causes: {:?}", n.causes);
    assert!(n.unknown.is_empty(), "unexpected unknown: {:?}", n.unknown);
    n
}

// ---- seed manifests -------------------------------------------------------------------

const SNAPSHOT_DEFAULTS: fn() -> Value =
    || json!({"spec": {"deletionPolicy": "Delete", "failureDeadline": "5m0s"}});
const RESTORE_DEFAULTS: fn() -> Value = || json!({"spec": {"targetReadinessPolicy": "WaitGracePeriod", "volumeRestorePolicy": "RandomizeNames"}});

fn seed_000_snapshot() -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1alpha1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "mariadb-server-2022-3-23"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "mariadb-server"}}
    })
}

fn seed_000_restore() -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1alpha1",
        "kind": "VirtualMachineRestore",
        "metadata": {"name": "restore-db"},
        "spec": {
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "mariadb-server"},
            "virtualMachineSnapshotName": "mariadb-server-2022-3-23"
        }
    })
}

/// Seed 000's VM is an excerpt ("...output omitted..."); the omitted name and template are
/// filled in with a template that uses both DataVolumes.
fn seed_000_vm() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "front1-vm1", "namespace": "web"},
        "spec": {
            "runStrategy": "Halted",
            "dataVolumeTemplates": [
                {
                    "metadata": {"creationTimestamp": null, "name": "front1-vm1-bvle4"},
                    "spec": {
                        "pvc": {
                            "accessModes": ["ReadWriteMany"],
                            "resources": {"requests": {"storage": "10Gi"}},
                            "storageClassName": "ocs-external-storagecluster-ceph-rbd",
                            "volumeMode": "Block"
                        },
                        "source": {"pvc": {"name": "vm1", "namespace": "golden-vms"}}
                    }
                },
                {
                    "metadata": {"creationTimestamp": null, "name": "front1-webroot-diaki"},
                    "spec": {
                        "pvc": {
                            "accessModes": ["ReadWriteMany"],
                            "resources": {"requests": {"storage": "1Gi"}},
                            "storageClassName": "ocs-external-storagecluster-ceph-rbd",
                            "volumeMode": "Block"
                        },
                        "source": {"pvc": {"name": "webroot", "namespace": "golden-vms"}}
                    }
                }
            ],
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"kubevirt.io/domain": "front1-vm1"}},
                "spec": {
                    "domain": {
                        "cpu": {"cores": 1, "sockets": 1, "threads": 1},
                        "memory": {"guest": "2Gi"},
                        "devices": {
                            "disks": [
                                {"name": "rootdisk", "disk": {"bus": "virtio"}, "bootOrder": 1},
                                {"name": "webroot", "disk": {"bus": "virtio"}}
                            ],
                            "interfaces": [{"name": "default", "masquerade": {}, "macAddress": "02:9c:5a:00:00:01"}],
                            "rng": {}
                        },
                        "machine": {"type": "pc-q35-rhel8.4.0"},
                        "resources": {"requests": {"memory": "2Gi"}}
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "terminationGracePeriodSeconds": 180,
                    "volumes": [
                        {"name": "rootdisk", "dataVolume": {"name": "front1-vm1-bvle4"}},
                        {"name": "webroot", "dataVolume": {"name": "front1-webroot-diaki"}}
                    ]
                }
            }
        }
    })
}

fn seed_000_dv() -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": {"name": "documentroot-clone1"},
        "spec": {
            "storage": {
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "ocs-external-storagecluster-ceph-rbd"
            },
            "source": {"pvc": {"name": "documentroot", "namespace": "golden-vms"}}
        }
    })
}

fn seed_001_snapshot() -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1alpha1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "my-vmsnapshot"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "my-vm"}}
    })
}

fn seed_002_snapshot() -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1alpha1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "snap-larry"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "larry"}}
    })
}

fn seed_002_restore() -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1alpha1",
        "kind": "VirtualMachineRestore",
        "metadata": {"name": "restore-larry"},
        "spec": {
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "larry"},
            "virtualMachineSnapshotName": "snap-larry"
        }
    })
}

fn seed_004_storageclass() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "openebs-zfspv"},
        "parameters": {
            "recordsize": "128k",
            "compression": "off",
            "dedup": "off",
            "fstype": "zfs",
            "poolname": "zfspv-pool"
        },
        "provisioner": "zfs.csi.openebs.io",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [
            {"matchLabelExpressions": [{"key": "kubernetes.io/hostname", "values": ["master1", "master2"]}]}
        ]
    })
}

fn seed_004_snapshot() -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "snap-larry"},
        "spec": {
            "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "larry"},
            "failureDeadline": "1m"
        }
    })
}

fn seed_004_restore() -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineRestore",
        "metadata": {"name": "restore-larry"},
        "spec": {
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "larry"},
            "virtualMachineSnapshotName": "snap-larry"
        }
    })
}

fn seed_004_clone() -> Value {
    json!({
        "kind": "VirtualMachineClone",
        "apiVersion": "clone.kubevirt.io/v1alpha1",
        "metadata": {"name": "testclone"},
        "spec": {
            "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-cirros"},
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-clone-target"},
            "labelFilters": ["*", "!someKey/*"],
            "annotationFilters": ["anotherKey/*"],
            "template": {
                "labelFilters": ["*", "!someKey/*"],
                "annotationFilters": ["anotherKey/*"]
            },
            "newMacAddresses": {"interfaceName": "00-11-22"},
            "newSMBiosSerial": "new-serial"
        }
    })
}

fn seed_004_vmi() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "cirros-vm"},
        "spec": {
            "domain": {
                "devices": {"disks": [{"disk": {"bus": "virtio"}, "name": "dvdisk"}]},
                "machine": {"type": ""},
                "resources": {"requests": {"memory": "64M"}}
            },
            "terminationGracePeriodSeconds": 0,
            "volumes": [{"name": "dvdisk", "dataVolume": {"name": "cirros-vm-disk"}}]
        },
        "status": {}
    })
}

fn seed_004_dv() -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": {"name": "cloned-datavolume"},
        "spec": {
            "source": {"pvc": {"namespace": "source-ns", "name": "source-datavolume"}},
            "storage": {}
        }
    })
}

fn seed_004_storageprofile() -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "StorageProfile",
        "metadata": {"name": "hostpath-provisioner"},
        "spec": {
            "claimPropertySets": [{"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}],
            "cloneStrategy": "snapshot"
        },
        "status": {
            "storageClass": "hostpath-provisioner",
            "provisioner": "kubevirt.io/hostpath-provisioner",
            "claimPropertySets": [{"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}],
            "cloneStrategy": "snapshot"
        }
    })
}

#[test]
fn every_seed_manifest_round_trips_with_only_defaults_added() {
    let sc_defaults = json!({"reclaimPolicy": "Delete"});
    let cases: Vec<(&str, Value, Value)> = vec![
        ("000 snapshot", seed_000_snapshot(), SNAPSHOT_DEFAULTS()),
        ("000 restore", seed_000_restore(), RESTORE_DEFAULTS()),
        ("000 vm", seed_000_vm(), json!({})),
        ("000 dv", seed_000_dv(), json!({})),
        ("001 snapshot", seed_001_snapshot(), SNAPSHOT_DEFAULTS()),
        ("002 snapshot", seed_002_snapshot(), SNAPSHOT_DEFAULTS()),
        ("002 restore", seed_002_restore(), RESTORE_DEFAULTS()),
        ("004 storageclass", seed_004_storageclass(), sc_defaults),
        (
            "004 snapshot",
            seed_004_snapshot(),
            json!({"spec": {"deletionPolicy": "Delete"}}),
        ),
        ("004 restore", seed_004_restore(), RESTORE_DEFAULTS()),
        ("004 vmi", seed_004_vmi(), json!({})),
        ("004 dv", seed_004_dv(), json!({})),
        ("004 storageprofile", seed_004_storageprofile(), json!({})),
    ];
    for (name, input, defaults) in cases {
        let n = norm(input.clone());
        assert!(n.unknown.is_empty(), "{name}: unknown {:?}", n.unknown);
        assert!(n.causes.is_empty(), "{name}: causes {:?}", n.causes);
        assert_eq!(n.object, merged(input, defaults), "{name}");
    }
}

#[test]
fn seed_004_clone_round_trips_once_its_mac_is_real() {
    let mut clone = seed_004_clone();
    clone["spec"]["newMacAddresses"]["interfaceName"] = json!("02:11:22:33:44:55");
    let n = assert_valid(clone.clone());
    // volumeNamePolicy is left unset.
    assert_eq!(n.object, clone);
}

#[test]
fn seed_004_clone_placeholder_mac_is_invalid() {
    let n = norm(seed_004_clone());
    assert!(n.unknown.is_empty());
    assert_eq!(fields(&n), vec!["spec.newMacAddresses[interfaceName]"]);
    assert_eq!(n.causes[0].reason, "FieldValueInvalid");
    assert!(
        n.causes[0]
            .message
            .contains("'00-11-22' is not a valid MAC address"),
        "{}",
        n.causes[0].message
    );

    // Through admission it is a 422 with the cause in the Status details.
    let res = registry::by_kind("clone.kubevirt.io/v1alpha1", "VirtualMachineClone").unwrap();
    let err = admit(res, seed_004_clone(), FieldValidation::Strict).unwrap_err();
    assert!(err.is(ErrorKind::Invalid));
    let status = err.to_status();
    assert_eq!(status["code"], 422);
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.newMacAddresses[interfaceName]"
    );
}

#[test]
fn admission_stores_the_storage_version_with_defaults() {
    let res = registry::by_kind("snapshot.kubevirt.io/v1alpha1", "VirtualMachineSnapshot").unwrap();
    let out = admit(res, seed_002_snapshot(), FieldValidation::Strict).unwrap();
    assert_eq!(out.object["apiVersion"], "snapshot.kubevirt.io/v1beta1");
    assert_eq!(out.object["spec"]["failureDeadline"], "5m0s");
    assert_eq!(out.object["spec"]["deletionPolicy"], "Delete");
    assert!(out.warnings.is_empty());
}

// ---- unknown fields --------------------------------------------------------------------

#[test]
fn unknown_fields_are_reported_with_their_paths_and_pruned() {
    let mut vm = seed_000_vm();
    vm["spec"]["foo"] = json!(1);
    vm["spec"]["template"]["spec"]["domain"]["bogus"] = json!({"x": 1});
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][1]["frob"] = json!(true);
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["masquerade"]["extra"] =
        json!(1);
    vm["spec"]["dataVolumeTemplates"][0]["spec"]["source"]["pvc"]["nope"] = json!("x");
    vm["metadata"]["bogusMeta"] = json!("x");
    vm["status"] = json!({"printableStatus": "Stopped", "anythingGoes": {"a": 1}});
    let n = norm(vm);
    let mut unknown = n.unknown.clone();
    unknown.sort();
    assert_eq!(
        unknown,
        vec![
            "metadata.bogusMeta",
            "spec.dataVolumeTemplates[0].spec.source.pvc.nope",
            "spec.foo",
            "spec.template.spec.domain.bogus",
            "spec.template.spec.domain.devices.disks[1].frob",
            "spec.template.spec.domain.devices.interfaces[0].masquerade.extra",
        ]
    );
    assert!(n.object["spec"].get("foo").is_none());
    assert!(n.object["spec"]["template"]["spec"]["domain"]
        .get("bogus")
        .is_none());
    assert_eq!(n.object["status"]["anythingGoes"]["a"], 1);
}

#[test]
fn strict_rejects_unknown_fields_and_warn_prunes_them() {
    let res = registry::by_kind("snapshot.kubevirt.io/v1beta1", "VirtualMachineSnapshot").unwrap();
    let mut snap = seed_004_snapshot();
    snap["spec"]["foo"] = json!("bar");
    let err = admit(res, snap.clone(), FieldValidation::Strict).unwrap_err();
    assert!(err.is(ErrorKind::BadRequest));
    assert!(
        err.message.contains("unknown field \"spec.foo\""),
        "{}",
        err.message
    );

    let out = admit(res, snap.clone(), FieldValidation::Warn).unwrap();
    assert_eq!(out.warnings, vec!["unknown field \"spec.foo\"".to_string()]);
    assert!(out.object["spec"].get("foo").is_none());

    let out = admit(res, snap, FieldValidation::Ignore).unwrap();
    assert!(out.warnings.is_empty());
}

#[test]
fn top_level_unknown_fields_are_reported() {
    let mut sc = seed_004_storageclass();
    sc["spec"] = json!({"x": 1});
    let n = norm(sc);
    assert_eq!(n.unknown, vec!["spec"]);
}

#[test]
fn a_wrongly_typed_field_is_a_bad_request_naming_it() {
    let mut vm = seed_000_vm();
    vm["spec"]["running"] = json!("yes");
    let err = normalize("VirtualMachine", vm).unwrap_err();
    assert!(err.is(ErrorKind::BadRequest));
    assert!(err.message.contains("spec.running"), "{}", err.message);

    let mut vmi = seed_004_vmi();
    vmi["spec"]["volumes"][0]["name"] = json!(5);
    let err = normalize("VirtualMachineInstance", vmi).unwrap_err();
    assert!(
        err.message.contains("spec.volumes[0].name"),
        "{}",
        err.message
    );
}

#[test]
fn every_registered_kind_has_a_type() {
    for r in registry::RESOURCES {
        let obj = json!({
            "apiVersion": r.api_version(r.storage_version()),
            "kind": r.kind,
            "metadata": {"name": "x"},
        });
        let n = normalize(r.kind, obj).unwrap_or_else(|e| panic!("{}: {e}", r.kind));
        assert_eq!(n.object["kind"], r.kind);
        assert_eq!(n.object["metadata"]["name"], "x");
        assert!(n.unknown.is_empty());
    }
    assert!(normalize("Pod", json!({})).is_err());
}

#[test]
fn typed_structs_decode_stored_objects() {
    let n = norm(seed_000_vm());
    let vm: types::kubevirt::VirtualMachine = serde_json::from_value(n.object).unwrap();
    let spec = vm.spec.unwrap();
    assert_eq!(spec.effective_run_strategy(), "Halted");
    let t = spec.template.unwrap().spec.unwrap();
    assert_eq!(
        t.volumes.as_ref().unwrap()[0].claim_name(),
        Some("front1-vm1-bvle4")
    );
    let dvt = &spec.data_volume_templates.unwrap()[0];
    assert_eq!(
        dvt.spec.pvc.as_ref().unwrap().storage_request(),
        Some(10 << 30)
    );

    let n = norm(seed_004_snapshot());
    let snap: types::snapshot::VirtualMachineSnapshot = serde_json::from_value(n.object).unwrap();
    assert_eq!(
        snap.spec.unwrap().failure_deadline(),
        Some(Duration::from_secs(60))
    );

    let clone: types::clone::VirtualMachineClone =
        serde_json::from_value(seed_004_clone()).unwrap();
    assert_eq!(
        clone.spec.unwrap().new_smbios_serial.as_deref(),
        Some("new-serial")
    );
    let _: types::cdi::DataVolume = serde_json::from_value(seed_004_dv()).unwrap();
    let _: types::storage::StorageClass = serde_json::from_value(seed_004_storageclass()).unwrap();
    let _: types::volumesnapshot::VolumeSnapshot = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "a"}, "spec": {"source": {"persistentVolumeClaimName": "p"}}
    }))
    .unwrap();
    let _: types::core::PersistentVolumeClaim = serde_json::from_value(pvc()).unwrap();
}

// ---- defaults --------------------------------------------------------------------------

#[test]
fn snapshot_defaults_keep_given_values() {
    let mut s = seed_002_snapshot();
    s["spec"]["deletionPolicy"] = json!("Retain");
    s["spec"]["failureDeadline"] = json!("0s");
    let n = assert_valid(s.clone());
    assert_eq!(n.object, s);
}

#[test]
fn restore_defaults_keep_given_values() {
    let mut r = seed_002_restore();
    r["spec"]["targetReadinessPolicy"] = json!("StopTarget");
    r["spec"]["volumeRestorePolicy"] = json!("InPlace");
    let n = assert_valid(r.clone());
    assert_eq!(n.object, r);
}

#[test]
fn storage_class_and_volume_snapshot_defaults() {
    let n = assert_valid(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local"}, "provisioner": "vmsnap.io/btrfs"
    }));
    assert_eq!(n.object["reclaimPolicy"], "Delete");
    assert_eq!(n.object["volumeBindingMode"], "Immediate");

    let n = assert_valid(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "c"}, "driver": "vmsnap.io/btrfs"
    }));
    assert_eq!(n.object["deletionPolicy"], "Delete");

    let n = assert_valid(volume_snapshot_content());
    assert_eq!(n.object["spec"]["deletionPolicy"], "Delete");
}

#[test]
fn vm_without_running_or_run_strategy_is_left_as_is() {
    let mut vm = seed_000_vm();
    vm["spec"].as_object_mut().unwrap().remove("runStrategy");
    let n = assert_valid(vm.clone());
    assert_eq!(n.object, vm);
}

// ---- validation ------------------------------------------------------------------------

#[test]
fn snapshot_source_must_be_a_kubevirt_vm() {
    let mut s = seed_002_snapshot();
    s["spec"]["source"]["apiGroup"] = json!("apps");
    assert_invalid(s, "spec.source.apiGroup");
    let mut s = seed_002_snapshot();
    s["spec"]["source"]["kind"] = json!("VirtualMachineInstance");
    assert_invalid(s, "spec.source.kind");
    let mut s = seed_002_snapshot();
    s["spec"]["source"]["name"] = json!("");
    assert_invalid(s, "spec.source.name");
    let mut s = seed_002_snapshot();
    s["spec"]["source"]
        .as_object_mut()
        .unwrap()
        .remove("apiGroup");
    assert_invalid(s, "spec.source.apiGroup");
    assert_invalid(
        json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot", "metadata": {"name": "s"}}),
        "spec",
    );
}

#[test]
fn snapshot_failure_deadline_must_be_a_go_duration() {
    for good in ["1m", "5m0s", "0s", "0", "1h30m", "90s", "1.5h"] {
        let mut s = seed_002_snapshot();
        s["spec"]["failureDeadline"] = json!(good);
        assert_valid(s);
    }
    for bad in ["5", "soon", "-1m", "1d", ""] {
        let mut s = seed_002_snapshot();
        s["spec"]["failureDeadline"] = json!(bad);
        let n = assert_invalid(s, "spec.failureDeadline");
        assert!(n.causes[0].message.contains("not a valid duration"));
    }
}

#[test]
fn snapshot_deletion_policy_enum() {
    let mut s = seed_002_snapshot();
    s["spec"]["deletionPolicy"] = json!("Keep");
    let n = assert_invalid(s, "spec.deletionPolicy");
    assert_eq!(n.causes[0].reason, "FieldValueNotSupported");
    assert!(n.causes[0].message.contains("\"Delete\", \"Retain\""));
}

#[test]
fn snapshot_mode_and_scratch_size() {
    let mut s = seed_002_snapshot();
    s["spec"]["snapshotMode"] = json!("External");
    s["spec"]["overlayScratchSize"] = json!("1Gi");
    assert_valid(s);
    let mut s = seed_002_snapshot();
    s["spec"]["overlayScratchSize"] = json!("1Gi");
    assert_invalid(s, "spec.overlayScratchSize");
    let mut s = seed_002_snapshot();
    s["spec"]["snapshotMode"] = json!("Sideways");
    assert_invalid(s, "spec.snapshotMode");
}

#[test]
fn restore_target_and_snapshot_name_are_required() {
    let mut r = seed_002_restore();
    r["spec"]["target"]["kind"] = json!("VirtualMachineInstance");
    assert_invalid(r, "spec.target.kind");
    let mut r = seed_002_restore();
    r["spec"]
        .as_object_mut()
        .unwrap()
        .remove("virtualMachineSnapshotName");
    let n = assert_invalid(r, "spec.virtualMachineSnapshotName");
    assert_eq!(n.causes[0].reason, "FieldValueRequired");
    let mut r = seed_002_restore();
    r["spec"]["target"]["name"] = json!("");
    assert_invalid(r, "spec.target.name");
    let mut r = seed_002_restore();
    r["spec"]["target"]["apiGroup"] = json!("snapshot.kubevirt.io");
    assert_invalid(r, "spec.target.apiGroup");
}

#[test]
fn restore_enums() {
    for (field, bad) in [
        ("targetReadinessPolicy", "WaitForever"),
        ("volumeRestorePolicy", "Overwrite"),
        ("volumeOwnershipPolicy", "Restore"),
    ] {
        let mut r = seed_002_restore();
        r["spec"][field] = json!(bad);
        assert_invalid(r, &format!("spec.{field}"));
    }
    let mut r = seed_002_restore();
    r["spec"]["volumeRestorePolicy"] = json!("PrefixTargetName");
    r["spec"]["volumeOwnershipPolicy"] = json!("None");
    r["spec"]["targetReadinessPolicy"] = json!("WaitEventually");
    assert_valid(r);
}

#[test]
fn restore_patches_must_be_json_patches_on_spec_labels_or_annotations() {
    let mut r = seed_002_restore();
    r["spec"]["patches"] = json!([
        r#"{"op": "replace", "path": "/spec/runStrategy", "value": "Always"}"#,
        r#"{"op": "add", "path": "/metadata/labels/restored", "value": "yes"}"#,
        r#"{"op": "remove", "path": "/metadata/annotations/a~1b"}"#,
    ]);
    assert_valid(r);
    for (bad, why) in [
        (
            r#"{"op": "replace", "path": "/metadata/name", "value": "x"}"#,
            "not allowed",
        ),
        (
            r#"{"op": "replace", "path": "/status/ready", "value": true}"#,
            "not allowed",
        ),
        (
            r#"{"op": "replace", "path": "/metadata/labelsx", "value": {}}"#,
            "not allowed",
        ),
        (
            r#"{"op": "replace", "path": "/spec/running"}"#,
            "needs a \"value\"",
        ),
        (
            r#"{"op": "explode", "path": "/spec/a", "value": 1}"#,
            "unsupported patch operation",
        ),
        ("not json at all", "not valid JSON"),
    ] {
        let mut r = seed_002_restore();
        r["spec"]["patches"] = json!(["{\"op\":\"remove\",\"path\":\"/spec/x\"}", bad]);
        let n = assert_invalid(r, "spec.patches[1]");
        assert!(
            n.causes[0].message.contains(why),
            "{bad}: {}",
            n.causes[0].message
        );
    }
}

#[test]
fn restore_volume_overrides() {
    let mut r = seed_002_restore();
    r["spec"]["volumeRestoreOverrides"] = json!([
        {"volumeName": "rootdisk", "restoreName": "larry-root", "labels": {"a": "b"}, "annotations": {"c": "d"}}
    ]);
    let n = assert_valid(r.clone());
    assert_eq!(
        n.object["spec"]["volumeRestoreOverrides"],
        r["spec"]["volumeRestoreOverrides"]
    );
    let mut r = seed_002_restore();
    r["spec"]["volumeRestoreOverrides"] = json!([{"restoreName": "Bad_Name"}]);
    let n = norm(r);
    assert!(fields(&n).contains(&"spec.volumeRestoreOverrides[0].volumeName"));
    assert!(fields(&n).contains(&"spec.volumeRestoreOverrides[0].restoreName"));
}

#[test]
fn vm_run_strategy_enum_and_exclusive_with_running() {
    let mut vm = seed_000_vm();
    vm["spec"]["runStrategy"] = json!("Sometimes");
    let n = assert_invalid(vm, "spec.runStrategy");
    assert_eq!(n.causes[0].reason, "FieldValueNotSupported");
    for s in ["Always", "Halted", "Manual", "RerunOnFailure", "Once"] {
        let mut vm = seed_000_vm();
        vm["spec"]["runStrategy"] = json!(s);
        assert_valid(vm);
    }
    let mut vm = seed_000_vm();
    vm["spec"]["running"] = json!(true);
    assert_invalid(vm, "spec.running");
    let mut vm = seed_000_vm();
    vm["spec"].as_object_mut().unwrap().remove("runStrategy");
    vm["spec"]["running"] = json!(false);
    assert_valid(vm);
}

#[test]
fn vm_template_is_required() {
    let mut vm = seed_000_vm();
    vm["spec"].as_object_mut().unwrap().remove("template");
    assert_invalid(vm, "spec.template");
    let mut vm = seed_000_vm();
    vm["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("domain");
    assert_invalid(vm, "spec.template.spec.domain");
}

#[test]
fn vm_interface_mac_addresses_are_checked() {
    let mut vm = seed_000_vm();
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] =
        json!("00:00:00:00:00:00");
    let n = assert_invalid(
        vm,
        "spec.template.spec.domain.devices.interfaces[0].macAddress",
    );
    assert!(n.causes[0].message.contains("all zeros"));
    let mut vm = seed_000_vm();
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] =
        json!("03:00:00:00:00:01");
    assert_invalid(
        vm,
        "spec.template.spec.domain.devices.interfaces[0].macAddress",
    );
}

#[test]
fn disk_and_volume_names_are_dns_labels_and_disks_need_volumes() {
    let mut vm = seed_000_vm();
    vm["spec"]["template"]["spec"]["volumes"][1]["name"] = json!("Web_Root");
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][1]["name"] = json!("Web_Root");
    let n = norm(vm);
    assert!(fields(&n).contains(&"spec.template.spec.volumes[1].name"));
    assert!(fields(&n).contains(&"spec.template.spec.domain.devices.disks[1].name"));

    let mut vm = seed_000_vm();
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][1]["name"] = json!("orphan");
    let n = assert_invalid(vm, "spec.template.spec.domain.devices.disks[1].name");
    assert!(n.causes[0].message.contains("no volume"));

    let mut vmi = seed_004_vmi();
    vmi["spec"]["volumes"][0]["containerDisk"] = json!({"image": "quay.io/cirros"});
    let n = assert_invalid(vmi, "spec.volumes[0]");
    assert!(n.causes[0].message.contains("exactly one source"));

    let mut vmi = seed_004_vmi();
    vmi["spec"]["volumes"] = json!([
        {"name": "dvdisk", "dataVolume": {"name": "a"}},
        {"name": "dvdisk", "emptyDisk": {"capacity": "1Gi"}}
    ]);
    let n = assert_invalid(vmi, "spec.volumes[1].name");
    assert_eq!(n.causes[0].reason, "FieldValueDuplicate");
}

#[test]
fn interfaces_need_networks() {
    let mut vm = seed_000_vm();
    vm["spec"]["template"]["spec"]["networks"][0]["name"] = json!("other");
    assert_invalid(vm, "spec.template.spec.domain.devices.interfaces[0].name");
}

#[test]
fn vm_quantities_are_checked() {
    let mut vm = seed_000_vm();
    vm["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"] = json!("lots");
    assert_invalid(vm, "spec.template.spec.domain.resources.requests[memory]");
    let mut vm = seed_000_vm();
    vm["spec"]["dataVolumeTemplates"][0]["spec"]["pvc"]["resources"]["requests"]["storage"] =
        json!("10GB");
    assert_invalid(
        vm,
        "spec.dataVolumeTemplates[0].spec.pvc.resources.requests[storage]",
    );
}

#[test]
fn kubevirt_cr_keeps_unknown_configuration_sections_it_names() {
    let kv = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {
            "certificateRotateStrategy": {},
            "configuration": {
                "developerConfiguration": {"featureGates": ["Snapshot", "VMExport"]},
                "migrations": {"parallelMigrationsPerCluster": 5}
            },
            "imagePullPolicy": "IfNotPresent",
            "workloadUpdateStrategy": {}
        },
        "status": {"phase": "Deployed"}
    });
    let n = assert_valid(kv.clone());
    assert_eq!(n.object, kv);
    let typed: types::kubevirt::KubeVirt = serde_json::from_value(n.object).unwrap();
    assert_eq!(typed.feature_gates(), ["Snapshot", "VMExport"]);
}

fn pvc() -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "local",
            "volumeMode": "Filesystem",
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s1"}
        },
        "status": {"phase": "Pending"}
    })
}

#[test]
fn pvc_round_trips_and_checks_storage_request() {
    let n = assert_valid(pvc());
    assert_eq!(n.object, pvc());
    let mut p = pvc();
    p["spec"]["resources"]["requests"]["storage"] = json!("five gigs");
    let n = assert_invalid(p, "spec.resources.requests[storage]");
    assert!(n.causes[0].message.contains("not a valid quantity"));
    let mut p = pvc();
    p["spec"]["resources"] = json!({});
    assert_invalid(p, "spec.resources[storage]");
    let mut p = pvc();
    p["spec"]["accessModes"] = json!([]);
    assert_invalid(p, "spec.accessModes");
    let mut p = pvc();
    p["spec"]["accessModes"] = json!(["ReadWriteSometimes"]);
    assert_invalid(p, "spec.accessModes[0]");
    let mut p = pvc();
    p["spec"]["volumeMode"] = json!("Raw");
    assert_invalid(p, "spec.volumeMode");
    // A number is a valid quantity and comes back as its text.
    let mut p = pvc();
    p["spec"]["resources"]["requests"]["storage"] = json!(1073741824);
    let n = assert_valid(p);
    assert_eq!(
        n.object["spec"]["resources"]["requests"]["storage"],
        "1073741824"
    );
}

#[test]
fn datavolume_needs_exactly_one_source_and_a_storage_spec() {
    let mut dv = seed_004_dv();
    dv["spec"]["source"]["blank"] = json!({});
    let n = assert_invalid(dv, "spec.source");
    assert!(
        n.causes[0].message.contains("found pvc, blank"),
        "{}",
        n.causes[0].message
    );
    let mut dv = seed_004_dv();
    dv["spec"]["source"] = json!({});
    assert_invalid(dv, "spec.source");
    let mut dv = seed_004_dv();
    dv["spec"].as_object_mut().unwrap().remove("source");
    assert_invalid(dv, "spec.source");
    let mut dv = seed_004_dv();
    dv["spec"]["sourceRef"] = json!({"kind": "DataSource", "name": "fedora"});
    assert_invalid(dv, "spec.sourceRef");
    let mut dv = seed_004_dv();
    dv["spec"].as_object_mut().unwrap().remove("storage");
    assert_invalid(dv, "spec.pvc");
    let mut dv = seed_004_dv();
    dv["spec"]["pvc"] = json!({"accessModes": ["ReadWriteOnce"]});
    assert_invalid(dv, "spec.storage");

    for src in [
        json!({"blank": {}}),
        json!({"upload": {}}),
        json!({"snapshot": {"namespace": "ns", "name": "snap"}}),
        json!({"http": {"url": "http://example.invalid/disk.img", "secretRef": "s", "certConfigMap": "c"}}),
        json!({"registry": {"url": "docker://quay.io/containerdisks/fedora:40"}}),
    ] {
        let mut dv = seed_004_dv();
        dv["spec"]["source"] = src;
        dv["spec"]["contentType"] = json!("kubevirt");
        dv["spec"]["preallocation"] = json!(true);
        let n = assert_valid(dv.clone());
        assert_eq!(n.object, dv);
    }
    let mut dv = seed_004_dv();
    dv["spec"].as_object_mut().unwrap().remove("source");
    dv["spec"]["sourceRef"] =
        json!({"kind": "DataSource", "namespace": "os-images", "name": "fedora"});
    assert_valid(dv);
    let mut dv = seed_004_dv();
    dv["spec"]["contentType"] = json!("iso");
    assert_invalid(dv, "spec.contentType");
    let mut dv = seed_004_dv();
    dv["spec"]["source"]["http"] = json!({"bogus": 1});
    dv["spec"]["source"].as_object_mut().unwrap().remove("pvc");
    let n = assert_invalid(dv, "spec.source.http.url");
    assert_eq!(n.unknown, vec!["spec.source.http.bogus"]);
}

#[test]
fn storage_profile_enums() {
    let mut sp = seed_004_storageprofile();
    sp["spec"]["cloneStrategy"] = json!("teleport");
    assert_invalid(sp, "spec.cloneStrategy");
    for s in ["copy", "snapshot", "csi-clone"] {
        let mut sp = seed_004_storageprofile();
        sp["spec"]["cloneStrategy"] = json!(s);
        sp["spec"]["snapshotClass"] = json!("btrfs");
        sp["spec"]["dataImportCronSourceFormat"] = json!("snapshot");
        assert_valid(sp);
    }
}

#[test]
fn storage_class_enums_and_provisioner() {
    let mut sc = seed_004_storageclass();
    sc["reclaimPolicy"] = json!("Recycle");
    assert_invalid(sc, "reclaimPolicy");
    let mut sc = seed_004_storageclass();
    sc["volumeBindingMode"] = json!("Later");
    assert_invalid(sc, "volumeBindingMode");
    let mut sc = seed_004_storageclass();
    sc.as_object_mut().unwrap().remove("provisioner");
    assert_invalid(sc, "provisioner");
}

fn volume_snapshot_content() -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "snapcontent-1"},
        "spec": {
            "driver": "vmsnap.io/btrfs",
            "source": {"volumeHandle": "pvc-1"},
            "volumeSnapshotClassName": "btrfs",
            "volumeSnapshotRef": {"name": "s1", "namespace": "default", "uid": "u1"}
        }
    })
}

#[test]
fn volume_snapshot_source_needs_exactly_one_member() {
    let vs = |source: Value| {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s1", "namespace": "default"},
            "spec": {"source": source, "volumeSnapshotClassName": "btrfs"}
        })
    };
    let ok = vs(json!({"persistentVolumeClaimName": "data"}));
    assert_eq!(assert_valid(ok.clone()).object, ok);
    assert_valid(vs(json!({"volumeSnapshotContentName": "c"})));
    assert_invalid(vs(json!({})), "spec.source");
    assert_invalid(
        vs(json!({"persistentVolumeClaimName": "a", "volumeSnapshotContentName": "b"})),
        "spec.source",
    );
}

#[test]
fn volume_snapshot_content_and_class_checks() {
    let mut c = volume_snapshot_content();
    c["spec"]["source"]["snapshotHandle"] = json!("h");
    assert_invalid(c, "spec.source");
    let mut c = volume_snapshot_content();
    c["spec"]["deletionPolicy"] = json!("Shred");
    assert_invalid(c, "spec.deletionPolicy");
    let mut c = volume_snapshot_content();
    c["spec"]["driver"] = json!("");
    assert_invalid(c, "spec.driver");
    assert_invalid(
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": "c"}, "driver": "d", "deletionPolicy": "Maybe"}),
        "deletionPolicy",
    );
}

#[test]
fn clone_source_and_target_rules() {
    let ok = || {
        let mut c = seed_004_clone();
        c["spec"]["newMacAddresses"]["interfaceName"] = json!("02:11:22:33:44:55");
        c
    };
    let mut c = ok();
    c["spec"]["source"] = json!({"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": "snap-1"});
    assert_valid(c);
    let mut c = ok();
    c["spec"]["source"]["kind"] = json!("DataVolume");
    assert_invalid(c, "spec.source.kind");
    let mut c = ok();
    c["spec"]["source"]["apiGroup"] = json!("snapshot.kubevirt.io");
    assert_invalid(c, "spec.source.apiGroup");
    let mut c = ok();
    c["spec"].as_object_mut().unwrap().remove("source");
    assert_invalid(c, "spec.source");
    let mut c = ok();
    c["spec"]["target"]["kind"] = json!("VirtualMachineSnapshot");
    assert_invalid(c, "spec.target.kind");
    let mut c = ok();
    c["spec"]["target"]["name"] = json!("vm-cirros");
    let n = assert_invalid(c, "spec.target.name");
    assert!(n.causes[0].message.contains("cannot be equal"));
    // Without a target a name is generated later.
    let mut c = ok();
    c["spec"].as_object_mut().unwrap().remove("target");
    assert_valid(c);
}

#[test]
fn clone_filters_allow_bang_first_and_star_last_only() {
    for (path, bad) in [
        ("labelFilters", "some*Key"),
        ("labelFilters", "key!"),
        ("annotationFilters", "**"),
        ("annotationFilters", "!!a"),
    ] {
        let mut c = seed_004_clone();
        c["spec"]["newMacAddresses"]["interfaceName"] = json!("02:11:22:33:44:55");
        c["spec"][path] = json!(["ok/*", bad]);
        assert_invalid(c, &format!("spec.{path}[1]"));
    }
    let mut c = seed_004_clone();
    c["spec"]["newMacAddresses"]["interfaceName"] = json!("02:11:22:33:44:55");
    c["spec"]["template"]["labelFilters"] = json!(["*", "a*b"]);
    assert_invalid(c, "spec.template.labelFilters[1]");
}

#[test]
fn clone_mac_addresses_patches_and_volume_name_policy() {
    for bad in [
        "00:00:00:00:00",
        "00:00:00:00:00:00",
        "ff:ff:ff:ff:ff:ff",
        "zz:11:22:33:44:55",
    ] {
        let mut c = seed_004_clone();
        c["spec"]["newMacAddresses"]["interfaceName"] = json!(bad);
        let n = assert_invalid(c, "spec.newMacAddresses[interfaceName]");
        assert!(n.causes[0].message.contains(&format!("'{bad}'")));
    }
    let mut c = seed_004_clone();
    c["spec"]["newMacAddresses"]["interfaceName"] = json!("02-11-22-33-44-55");
    c["spec"]["patches"] =
        json!([r#"{"op":"add","path":"/spec/template/metadata/labels/x","value":"y"}"#]);
    c["spec"]["volumeNamePolicy"] = json!("RandomizeNames");
    assert_valid(c);
    let mut c = seed_004_clone();
    c["spec"]["newMacAddresses"]["interfaceName"] = json!("02-11-22-33-44-55");
    c["spec"]["patches"] = json!(["{oops"]);
    c["spec"]["volumeNamePolicy"] = json!("KeepNames");
    let n = norm(c);
    assert_eq!(fields(&n), vec!["spec.patches[0]", "spec.volumeNamePolicy"]);
}

#[test]
fn events_and_namespaces() {
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "snap-larry.1", "namespace": "default"},
        "involvedObject": {"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                           "name": "snap-larry", "namespace": "default", "uid": "u"},
        "reason": "SuccessfulVirtualMachineSnapshotCreate",
        "message": "Successfully created snapshot",
        "type": "Normal",
        "source": {"component": "snapshot-controller"},
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:00:05Z",
        "count": 2,
        "eventTime": null,
        "reportingComponent": "vmsnap",
        "reportingInstance": "node-1"
    });
    let n = assert_valid(ev.clone());
    assert_eq!(n.object, ev);
    let mut bad = ev.clone();
    bad["type"] = json!("Catastrophic");
    assert_invalid(bad, "type");
    let mut bad = ev;
    bad["lastTimestamp"] = json!("yesterday");
    assert_invalid(bad, "lastTimestamp");

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "golden-vms"},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
    assert_eq!(assert_valid(ns.clone()).object, ns);
    assert_invalid(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}),
        "metadata.name",
    );
}

#[test]
fn snapshot_content_round_trips() {
    let vm = norm(seed_000_vm()).object;
    let content = json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshotContent",
        "metadata": {"name": "vmsnapshot-content-1", "namespace": "web",
                     "finalizers": ["snapshot.kubevirt.io/vmsnapshotcontent-protection"],
                     "ownerReferences": [{"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                                          "name": "s", "uid": "u", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {
            "source": {"virtualMachine": {"metadata": vm["metadata"], "spec": vm["spec"], "status": {"printableStatus": "Stopped"}}},
            "virtualMachineSnapshotName": "s",
            "volumeBackups": [{
                "volumeName": "rootdisk",
                "persistentVolumeClaim": {
                    "metadata": {"name": "front1-vm1-bvle4", "namespace": "web", "labels": {"a": "b"}},
                    "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}},
                             "storageClassName": "ceph", "volumeMode": "Block", "volumeName": "pv-1"}
                },
                "volumeSnapshotName": "vmsnapshot-u-volume-rootdisk"
            }]
        },
        "status": {"readyToUse": true, "creationTime": "2026-01-01T00:00:00Z"}
    });
    let n = assert_valid(content.clone());
    assert_eq!(n.object, content);
    let mut bad = content;
    bad["spec"]["volumeBackups"][0]["volumeName"] = json!("");
    assert_invalid(bad, "spec.volumeBackups[0].volumeName");
}

#[test]
fn metadata_round_trips() {
    let mut s = seed_004_snapshot();
    s["metadata"] = json!({
        "name": "snap-larry", "namespace": "default", "uid": "0b9e2c3a", "resourceVersion": "42",
        "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
        "deletionTimestamp": "2026-01-02T00:00:00Z", "deletionGracePeriodSeconds": 0,
        "labels": {"app": "db"}, "annotations": {"note": "x"},
        "finalizers": ["snapshot.kubevirt.io/vmsnapshot-protection"],
        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
        "generateName": "snap-"
    });
    s["spec"]["deletionPolicy"] = json!("Delete");
    s["status"] = json!({"phase": "Succeeded", "readyToUse": true});
    let n = assert_valid(s.clone());
    assert_eq!(n.object, s);
}

#[test]
fn public_parsers() {
    assert_eq!(parse_quantity("10Gi"), Some(10 * 1024 * 1024 * 1024));
    assert_eq!(parse_quantity("64M"), Some(64_000_000));
    assert_eq!(parse_quantity("1e3"), Some(1000));
    assert_eq!(parse_quantity("5Pi"), Some(5 << 50));
    assert_eq!(parse_quantity("1.5k"), Some(1500));
    assert_eq!(parse_quantity("ten"), None);
    assert_eq!(parse_duration("1h2m3s"), Some(Duration::from_secs(3723)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_duration("1d"), None);
    assert_eq!(types::format_duration(Duration::from_secs(300)), "5m0s");
}
