//! The README is a tested path: its "Try it by hand" block runs in bash as it is
//! written (on free ports instead of 7070 and 50051), and every `rollout ...` line of
//! its shell blocks names commands and flags the binary has.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The first ```sh block after the heading `heading`.
fn block_after(text: &str, heading: &str) -> String {
    let from = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    let rest = &text[from..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = rest[start..].find("\n```").expect("the block's end");
    rest[start..start + end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_try_it_by_hand_block_runs_as_written() {
    let block = block_after(&readme(), "## Try it by hand");
    let (agent, server) = (free_port(), free_port());
    let script = block
        .replace("127.0.0.1:7070", &format!("127.0.0.1:{agent}"))
        .replace("127.0.0.1:50051", &format!("127.0.0.1:{server}"));
    assert_ne!(script, block, "the block names the ports it is moved off");
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(EXE).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // As a person's shell runs it, stopping at the first command that fails.
    let mut child = tokio::process::Command::new("bash")
        .args(["-e", "-u", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("ROLLOUT_SERVER", format!("http://127.0.0.1:{server}"))
        .env_remove("ROLLOUT_TOKEN")
        .env_remove("ROLLOUT_TOKEN_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let group = child.id().unwrap() as i32;
    let out = match tokio::time::timeout(Duration::from_secs(300), async {
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let read = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut r, &mut text).await.ok();
            text
        };
        let (o, e) = tokio::join!(read(Box::new(stdout)), read(Box::new(stderr)));
        (child.wait().await.unwrap(), o, e)
    })
    .await
    {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kills the process group this test started (bash and its jobs).
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
            panic!("the README's block did not end in 300 s; serve.log:\n{log}");
        }
    };
    // Whatever happened, nothing it started is left running.
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let (status, stdout, stderr) = out;
    let logs = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        status.success(),
        "the block failed ({status}):\n{stdout}\n{stderr}\nserve.log:\n{}",
        logs()
    );
    for said in [
        "ok: try-fix.yaml: fix `try-fix`, 4 waves",
        "submitted rollout `try-fix`",
        "waiting at the gate (exit 5)",
        "succeeded",
        "The fix (build 15.20.8207.12) has been deployed to 100% of the affected environment",
        "dry run: ",
        "restart job ",
        " succeeded: ",
    ] {
        assert!(stdout.contains(said), "no `{said}` in:\n{stdout}\n{stderr}");
    }
    assert!(!stderr.contains("panicked") && !stderr.contains("error:"), "{stderr}");
    let token = dir.path().join("alice.token");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token is its owner's only");
    assert_eq!(std::fs::read_to_string(&token).unwrap().trim().len(), 64);
}

/// Every `rollout ...` line of the README's shell blocks: its command exists and
/// each `--flag` it gives is one of that command's (or a top-level one).
#[test]
fn every_command_line_in_the_readme_is_one_the_binary_takes() {
    let text = readme();
    let mut command = rollout::cli::command();
    command.build();
    let mut checked = 0;
    for block in text.split("```sh\n").skip(1) {
        let body = block.split("\n```").next().unwrap_or_default();
        for line in body.lines().map(str::trim).filter(|l| l.starts_with("rollout ")) {
            // Up to a comment, a pipe, a redirection or the next command.
            let end = [" #", " |", " >", " &&", " ||", ";", " &"]
                .iter()
                .filter_map(|m| line.find(m))
                .min()
                .unwrap_or(line.len());
            let words: Vec<&str> = line[..end].split_whitespace().skip(1).collect();
            let mut at = &command;
            let mut path = vec!["rollout"];
            let mut rest = words.iter();
            while let Some(word) = rest.next() {
                if let Some(flag) = word.strip_prefix("--") {
                    // A top-level flag before the command (`--server URL status`).
                    let takes_value = at
                        .get_arguments()
                        .find(|a| a.get_long() == Some(flag))
                        .is_some_and(|a| a.get_action().takes_values());
                    if takes_value && !flag.contains('=') {
                        rest.next();
                    }
                    continue;
                }
                match at.find_subcommand(word) {
                    Some(sub) => {
                        at = sub;
                        path.push(word);
                    }
                    None => break,
                }
            }
            let top_level = words.first().is_none_or(|w| w.starts_with('-'));
            assert!(path.len() > 1 || top_level, "README: `{line}` names no command");
            for word in words.iter().map(|w| w.trim_matches(['[', ']'])) {
                let Some(flag) = word.strip_prefix("--") else { continue };
                let flag = flag.split('=').next().unwrap_or_default();
                let known = at
                    .get_arguments()
                    .chain(command.get_arguments())
                    .any(|a| a.get_long() == Some(flag));
                assert!(known, "README: `{line}`: `{}` has no --{flag}", path.join(" "));
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} lines found");
}
