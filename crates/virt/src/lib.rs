//! QEMU launcher, QMP and QGA clients, accelerator probe.
