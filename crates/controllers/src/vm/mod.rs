//! VirtualMachine and VirtualMachineInstance controllers on the QEMU runtime.
