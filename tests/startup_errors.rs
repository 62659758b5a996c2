//! Start-up refusals that need no broker to be running: each must exit non-zero with a message
//! that says what is wrong and how to fix it. (tmpfs and port-in-use are in protocol_edges.rs.)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn strand() -> &'static str {
    env!("CARGO_BIN_EXE_strand")
}

fn run_with_timeout(mut cmd: Command) -> (i32, String) {
    let out = cmd.stdin(std::process::Stdio::null()).output().expect("spawn strand");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn low_memlock_limit_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let is_root = unsafe { libc::geteuid() } == 0;
    // As root the limit does not apply (CAP_IPC_LOCK), so drop to an unprivileged user.
    let script = format!(
        "ulimit -l 64 && exec {} {} serve --listen 127.0.0.1:0 --data-dir {}",
        if is_root { "setpriv --reuid=65534 --regid=65534 --clear-groups" } else { "" },
        strand(),
        dir.path().display()
    );
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "sh", "-c", &script]);
    let (code, stderr) = run_with_timeout(cmd);
    assert_ne!(code, 0, "must refuse to start; stderr: {stderr}");
    assert_ne!(code, 124, "must not hang; stderr: {stderr}");
    assert!(stderr.contains("memlock"), "names the problem: {stderr}");
    assert!(stderr.contains("ulimit -l"), "says how to fix it: {stderr}");
}

#[test]
fn unknown_and_invalid_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (set, want) in [
        ("no.such.setting=1", "unknown setting"),
        ("num.partitions=0", "at least 1"),
        ("auto.create.topics.enable=maybe", "true or false"),
        ("log.segment.bytes=4294967296", "at most"),
    ] {
        let mut cmd = Command::new(strand());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()).args(["--set", set]);
        let (code, stderr) = run_with_timeout(cmd);
        assert_ne!(code, 0, "{set} must be refused");
        assert!(stderr.contains(want), "{set}: expected {want:?} in {stderr}");
    }
    // A config file with a bad line names the file and line.
    let file = dir.path().join("broker.properties");
    std::fs::write(&file, "# comment\nnum.partitions=3\nlog.segment.bytes=abc\n").unwrap();
    let mut cmd = Command::new(strand());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()).arg("--config").arg(&file);
    let (code, stderr) = run_with_timeout(cmd);
    assert_ne!(code, 0);
    assert!(stderr.contains("broker.properties:3"), "{stderr}");
}
