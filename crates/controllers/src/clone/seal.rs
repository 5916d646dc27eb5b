//! Guest identity reset ("sealing"), as `virt-sysprep` does: a new machine-id, no SSH host
//! keys, no logs or shell history. `virt-sysprep` is used when it is installed; otherwise a
//! built-in reset edits ext4 filesystems in raw images offline with `debugfs` (e2fsprogs).
//! Either way the result names the tool that ran; nothing claims a seal that did not happen.

use api::Error;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealReport {
    /// The tool that ran, and for the built-in reset why virt-sysprep did not.
    pub tool: String,
    pub actions: Vec<String>,
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Seals one disk image. The VM must be stopped.
pub fn seal_image(path: &Path, format: &str) -> api::Result<SealReport> {
    let mut why_builtin = "virt-sysprep is not installed".to_string();
    if std::env::var_os("VMSNAP_SEAL_BUILTIN").is_some() {
        why_builtin = "VMSNAP_SEAL_BUILTIN is set".into();
    } else if have("virt-sysprep") {
        let out = Command::new("virt-sysprep")
            .arg("-a")
            .arg(path)
            .args([
                "--format",
                format,
                "--operations",
                "machine-id,ssh-hostkeys,logfiles,bash-history,tmp-files",
            ])
            .env("LIBGUESTFS_BACKEND", "direct")
            .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
            .output()
            .map_err(|e| Error::internal(format!("cannot run virt-sysprep: {e}")))?;
        if out.status.success() {
            return Ok(SealReport {
                tool: "virt-sysprep".into(),
                actions: vec![
                    "machine-id".into(),
                    "ssh-hostkeys".into(),
                    "logfiles".into(),
                    "bash-history".into(),
                ],
            });
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        tracing::warn!(%stderr, "virt-sysprep failed; trying the built-in reset");
        why_builtin = format!(
            "virt-sysprep failed: {}",
            stderr.lines().last().unwrap_or("").trim()
        );
    }
    if format != "raw" {
        return Err(Error::unsupported(format!(
            "cannot seal a {format} image: virt-sysprep is not installed (apt-get install libguestfs-tools) and the built-in reset handles raw ext4 images only"
        )));
    }
    if !have("debugfs") {
        return Err(Error::precondition("cannot seal: neither virt-sysprep (libguestfs-tools) nor debugfs (e2fsprogs) is installed"));
    }
    seal_ext4(path, &why_builtin)
}

fn debugfs(path: &Path, script: &str) -> api::Result<String> {
    let dir = tempfile_dir()?;
    let cmds = dir.join("cmds");
    std::fs::write(&cmds, script).map_err(|e| Error::internal(e.to_string()))?;
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(path)
        .output()
        .map_err(|e| Error::internal(format!("cannot run debugfs: {e}")))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(Error::internal(format!(
            "debugfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn tempfile_dir() -> api::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "vmsnap-seal-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&d).map_err(|e| Error::internal(e.to_string()))?;
    Ok(d)
}

fn ls(path: &Path, dir: &str) -> api::Result<Vec<String>> {
    let out = debugfs(path, &format!("ls -p {dir}\n"))?;
    // `ls -p` prints /inode/mode/uid/gid/name/size/ per entry.
    Ok(out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('/').collect();
            (f.len() >= 6).then(|| f[5].to_string())
        })
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect())
}

fn seal_ext4(path: &Path, why_builtin: &str) -> api::Result<SealReport> {
    // Refuse anything that is not an ext filesystem at offset 0: the built-in reset does not
    // read partition tables, and must not write into a disk it does not understand.
    let probe = Command::new("dumpe2fs").arg("-h").arg(path).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err(Error::unsupported(
            "the built-in reset needs an ext4 filesystem on the whole disk; install libguestfs-tools for virt-sysprep",
        ));
    }
    let mut actions = Vec::new();
    let mut script = String::new();
    let dir = tempfile_dir()?;
    let mid = dir.join("machine-id");
    std::fs::write(&mid, format!("{}\n", uuid::Uuid::new_v4().simple()))
        .map_err(|e| Error::internal(e.to_string()))?;
    let etc = ls(path, "/etc").unwrap_or_default();
    if etc.iter().any(|n| n == "machine-id") {
        script.push_str("rm /etc/machine-id\n");
        script.push_str(&format!("write {} /etc/machine-id\n", mid.display()));
        actions.push("machine-id".into());
    }
    if etc.iter().any(|n| n == "ssh") {
        for k in ls(path, "/etc/ssh").unwrap_or_default() {
            if k.starts_with("ssh_host_") {
                script.push_str(&format!("rm /etc/ssh/{k}\n"));
                actions.push(format!("ssh-hostkeys:{k}"));
            }
        }
    }
    for home in ["/root"] {
        for f in ls(path, home).unwrap_or_default() {
            if f.ends_with("_history") {
                script.push_str(&format!("rm {home}/{f}\n"));
                actions.push(format!("history:{home}/{f}"));
            }
        }
    }
    for f in ls(path, "/var/log").unwrap_or_default() {
        if f.ends_with(".log") || f == "messages" || f == "wtmp" || f == "lastlog" {
            script.push_str(&format!("rm /var/log/{f}\n"));
            actions.push(format!("logfiles:{f}"));
        }
    }
    if !script.is_empty() {
        debugfs(path, &script)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(SealReport {
        tool: format!("debugfs (built-in ext4 reset; {why_builtin})"),
        actions,
    })
}
