//! Command-line definitions and dispatch.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "vmsnap",
    version,
    about = "VMs with consistent snapshots, fast restores and cheap clones"
)]
pub struct Cli {
    /// Namespace for client verbs (default: the kubeconfig's, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the control plane: API server, controllers, VM runtime and storage pools.
    Serve {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Accelerator for VMs: kvm, tcg or auto (probe KVM, fall back to TCG).
        #[arg(long, default_value = "auto")]
        accel: String,
        /// How many watch events the store keeps for watches that resume from a revision.
        #[arg(long, default_value_t = 100_000, hide = true)]
        retain_events: usize,
    },
    /// Print the kubeconfig that kubectl can use as is.
    Kubeconfig {
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Create or update objects from a file (`-` for stdin), like `kubectl apply -f`.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// List or show objects, like `kubectl get`.
    Get {
        resource: String,
        name: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Show an object with its events, like `kubectl describe`.
    Describe { resource: String, name: String },
    /// Delete objects by name or from a file.
    Delete {
        resource: Option<String>,
        name: Option<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// Do not wait for the object to be gone.
        #[arg(long)]
        no_wait: bool,
    },
    /// Wait for a condition, like `kubectl wait RES NAME --for condition=Ready`.
    Wait {
        resource: String,
        name: String,
        #[arg(long = "for")]
        for_: String,
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// Storage pools and volumes.
    #[command(subcommand)]
    Storage(crate::storage_cli::StorageCmd),
    /// Upload a disk image (raw or qcow2) into a DataVolume, like `virtctl image-upload`.
    ImageUpload(crate::storage_cli::ImageUploadArgs),
    #[command(flatten)]
    Vm(crate::vm_cli::VmCmd),
    #[command(flatten)]
    Snap(crate::snap_cli::SnapCmd),
    /// Run a benchmark and print its figures.
    Bench {
        /// What to measure: store.
        what: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(cli: Cli) -> api::Result<()> {
    let ns = cli.namespace.clone();
    match cli.cmd {
        Cmd::Serve {
            data_dir,
            listen,
            accel,
            retain_events,
        } => crate::serve::run(
            data_dir.unwrap_or_else(client::default_data_dir),
            listen,
            &accel,
            store::StoreOptions {
                retain_events,
                ..Default::default()
            },
        ),
        Cmd::Kubeconfig { data_dir } => {
            let path = match data_dir {
                Some(d) => d.join("kubeconfig"),
                None => client::kubeconfig_path(),
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                api::Error::not_found(format!(
                    "{}: {e} (start the server with `vmsnap serve` first)",
                    path.display()
                ))
            })?;
            print!("{text}");
            Ok(())
        }
        Cmd::Apply { files } => crate::kubectl::apply(&client(ns.as_deref())?, &files),
        Cmd::Get {
            resource,
            name,
            output,
            all_namespaces,
            selector,
        } => crate::kubectl::get(
            &client(ns.as_deref())?,
            &resource,
            name.as_deref(),
            output.as_deref(),
            all_namespaces,
            selector.as_deref(),
        ),
        Cmd::Describe { resource, name } => {
            crate::kubectl::describe(&client(ns.as_deref())?, &resource, &name)
        }
        Cmd::Delete {
            resource,
            name,
            files,
            no_wait,
        } => crate::kubectl::delete(
            &client(ns.as_deref())?,
            resource.as_deref(),
            name.as_deref(),
            &files,
            !no_wait,
        ),
        Cmd::Wait {
            resource,
            name,
            for_,
            timeout,
        } => crate::kubectl::wait(&client(ns.as_deref())?, &resource, &name, &for_, &timeout),
        Cmd::Bench { what, dir } => crate::serve::bench(&what, dir),
        Cmd::Storage(cmd) => crate::storage_cli::storage(&client(ns.as_deref())?, cmd),
        Cmd::ImageUpload(args) => crate::storage_cli::image_upload(&client(ns.as_deref())?, args),
        Cmd::Vm(cmd) => crate::vm_cli::run(&client(ns.as_deref())?, cmd),
        Cmd::Snap(cmd) => crate::snap_cli::run(&client(ns.as_deref())?, cmd),
    }
}

pub fn client(ns: Option<&str>) -> api::Result<client::Client> {
    let mut c = client::Client::from_env()?;
    if let Some(ns) = ns {
        c.namespace = ns.to_string();
    }
    Ok(c)
}
