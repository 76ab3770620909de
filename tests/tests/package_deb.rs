//! The Debian package: built by packaging/build-deb.sh (or a prebuilt
//! target/debian/ipfailover_*.deb), it holds the daemons under
//! /usr/libexec/ipfailover, the CLI in /usr/bin, the systemd unit, the
//! configuration (a conffile) and its examples, man pages and completions;
//! extracted into a scratch root, its masterd validates the example
//! configuration and its CLI runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::cluster::bin_path;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// target/ (the parent of target/<profile>/ where this test's binaries are).
fn target_dir() -> PathBuf {
    let masterd = bin_path("masterd").unwrap();
    masterd
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/masterd")
        .to_path_buf()
}

fn find_deb() -> Option<PathBuf> {
    let dir = target_dir().join("debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ipfailover_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// Builds the package from the binaries this test run uses (the debug
/// build under `cargo test`, so no second, release build is needed); never
/// reuses an older .deb, which could hide a packaging change.
fn package() -> PathBuf {
    let debian = target_dir().join("debian");
    let _ = std::fs::remove_dir_all(&debian);
    let profile = if bin_path("masterd")
        .unwrap()
        .parent()
        .is_some_and(|d| d.ends_with("release"))
    {
        "release"
    } else {
        "dev"
    };
    let status = Command::new("bash")
        .arg(workspace_root().join("packaging/build-deb.sh"))
        .env("CARGO_TARGET_DIR", target_dir())
        .env("IPF_PROFILE", profile)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "packaging/build-deb.sh failed (is cargo-deb installed? scripts/setup.sh installs it)"
    );
    find_deb().expect("build-deb.sh made no target/debian/ipfailover_*.deb")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_holds_every_file_and_extracts_into_a_scratch_root() {
    let deb = package();
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let has = |p: &str| paths.iter().any(|x| x.trim_start_matches('.') == p);
    let has_any = |ps: &[&str]| ps.iter().any(|p| has(p));
    for daemon in [
        "masterd",
        "transportd",
        "clusterd",
        "conntrackd",
        "failoverd",
    ] {
        let p = format!("/usr/libexec/ipfailover/{daemon}");
        assert!(has(&p), "{p} missing:\n{listing}");
        assert!(
            !has(&format!("/usr/bin/{daemon}")),
            "{daemon} must not be in /usr/bin"
        );
    }
    for p in [
        "/usr/bin/ipfailover",
        "/etc/ipfailover/ipfailover.toml",
        "/etc/ipfailover/events/README",
        "/usr/share/doc/ipfailover/examples/nodes",
        "/usr/share/doc/ipfailover/examples/public_addresses",
        "/usr/share/doc/ipfailover/examples/ipfailover.toml",
        "/usr/share/bash-completion/completions/ipfailover",
        "/usr/share/zsh/vendor-completions/_ipfailover",
        "/usr/share/fish/vendor_completions.d/ipfailover.fish",
    ] {
        assert!(has(p), "{p} missing:\n{listing}");
    }
    assert!(
        has_any(&[
            "/lib/systemd/system/ipfailover.service",
            "/usr/lib/systemd/system/ipfailover.service"
        ]),
        "unit missing:\n{listing}"
    );
    assert!(
        has_any(&[
            "/usr/share/man/man1/ipfailover.1",
            "/usr/share/man/man1/ipfailover.1.gz"
        ]),
        "man page missing:\n{listing}"
    );

    let package_name = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Package"));
    assert_eq!(package_name.trim(), "ipfailover");
    let info = std::env::temp_dir().join(format!("ipf-deb-ctrl-{}", std::process::id()));
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&info));
    let conf = std::fs::read_to_string(info.join("conffiles")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&info);
    assert!(
        conf.contains("/etc/ipfailover/ipfailover.toml"),
        "conffiles: {conf}"
    );

    // Extract into a scratch root: the files land, the binaries run.
    let root = std::env::temp_dir().join(format!("ipf-deb-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let unit = [
        "lib/systemd/system/ipfailover.service",
        "usr/lib/systemd/system/ipfailover.service",
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.is_file())
    .expect("unit extracted");
    let unit = std::fs::read_to_string(unit).unwrap();
    assert!(unit.contains("Type=notify"), "{unit}");
    assert!(
        unit.contains("ExecStart=/usr/libexec/ipfailover/masterd --config-dir /etc/ipfailover"),
        "{unit}"
    );
    let version = run(Command::new(root.join("usr/bin/ipfailover")).arg("--version"));
    assert!(version.starts_with("ipfailover "), "{version}");
    // The example configuration (plus the ipfailover.toml conffile) passes
    // masterd's validation with the packaged binaries.
    let etc = root.join("etc-test");
    std::fs::create_dir_all(&etc).unwrap();
    for f in ["nodes", "public_addresses", "ipfailover.toml"] {
        std::fs::copy(
            root.join("usr/share/doc/ipfailover/examples").join(f),
            etc.join(f),
        )
        .unwrap();
    }
    // The example's nodes are documentation addresses, none of them this
    // host's: name the PNN, as clusterd (and so masterd --check) would
    // otherwise rightly refuse the directory on this host.
    let toml = std::fs::read_to_string(etc.join("ipfailover.toml")).unwrap();
    assert!(toml.contains("# pnn = 0"), "the example shows the pnn key");
    std::fs::write(
        etc.join("ipfailover.toml"),
        toml.replacen("# pnn = 0", "pnn = 0", 1),
    )
    .unwrap();
    std::fs::write(etc.join("cluster.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        etc.join("cluster.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let check = run(Command::new(root.join("usr/libexec/ipfailover/masterd"))
        .arg("--config-dir")
        .arg(&etc)
        .arg("--check"));
    assert!(check.contains("configuration OK"), "{check}");
    std::fs::remove_dir_all(&root).unwrap();
}
