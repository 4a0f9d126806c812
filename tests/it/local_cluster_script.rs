//! scripts/local-cluster.sh runs binaries from its state dir (as root when started as root):
//! it refuses one that another local user could have created or could write to.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn status_with_state_dir(dir: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-cluster.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("status")
        .env("STOLON_LOCAL_DIR", dir)
        .env("STOLON_SKIP_BUILD", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn local_cluster_refuses_a_state_dir_others_could_tamper_with() {
    let base = tempfile::tempdir().unwrap();

    let open = base.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, err) = status_with_state_dir(&open);
    assert!(!ok && err.contains("is writable by others"), "{err}");

    let link = base.path().join("link");
    let mine = base.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&mine, &link).unwrap();
    let (ok, err) = status_with_state_dir(&link);
    assert!(!ok && err.contains("is a symlink"), "{err}");

    if nix::unistd::Uid::effective().is_root() {
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let (ok, err) = status_with_state_dir(&theirs);
        assert!(!ok && err.contains("belongs to uid 65534"), "{err}");
    }

    // A directory of ours that only we can write to is used.
    let (ok, err) = status_with_state_dir(&mine);
    assert!(ok, "{err}");
}
