//! `hivesup check` golden tests: every broken config in tests/configs/bad has its exact
//! expected output beside it (`NAME.expected`), every good one and every example in conf/
//! must print `ok`. Regenerate the expectations with `UPDATE_GOLDEN=1 cargo test --test config_check`
//! and review the diff.

// The test process is not hivesup: it may wait for its own children (clippy.toml bans that in src/).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hivesup() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hivesup"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tomls(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn check_in(dir: &Path, file: &str) -> Output {
    hivesup()
        .current_dir(dir)
        .args(["--config", file, "check"])
        .env_remove("HIVESUP_CONFIG")
        .output()
        .expect("run hivesup check")
}

fn report(what: &str, out: &Output) -> String {
    format!(
        "{what}: status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn bad_configs_match_their_golden_output() {
    let dir = root().join("tests/configs/bad");
    let files = tomls(&dir);
    assert!(
        files.len() >= 8,
        "expected the bad-config corpus in {}",
        dir.display()
    );
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let out = check_in(&dir, name);
        assert_eq!(out.status.code(), Some(1), "{}", report(name, &out));
        assert!(out.stdout.is_empty(), "{}", report(name, &out));
        let stderr = String::from_utf8(out.stderr.clone()).expect("utf-8 stderr");
        assert!(!stderr.contains("panicked"), "{}", report(name, &out));
        let expected_path = file.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                expected_path.display()
            )
        });
        assert_eq!(stderr, expected, "{}", report(name, &out));
        // Every line is FILE:LINE:COL: message, 1-based; FILE is the config, or an env file
        // it names (whose problems are reported where they are).
        for line in stderr.lines() {
            let mut parts = line.splitn(4, ':');
            let file = parts.next().unwrap();
            assert!(file == name || file.ends_with(".env"), "{line}");
            let l: usize = parts
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("line in {line}"));
            let c: usize = parts
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("column in {line}"));
            assert!(l >= 1 && c >= 1, "{line}");
            let msg = parts.next().unwrap().trim_start();
            assert!(!msg.ends_with('.'), "no final period: {line}");
            assert!(
                msg.chars().next().is_some_and(|ch| !ch.is_uppercase()),
                "starts lowercase: {line}"
            );
        }
    }
}

#[test]
fn good_configs_and_shipped_examples_pass() {
    let mut files = tomls(&root().join("tests/configs/good"));
    let conf = root().join("conf");
    if conf.is_dir() {
        files.extend(tomls(&conf));
    }
    assert!(!files.is_empty());
    for file in files {
        let out = check_in(
            file.parent().unwrap(),
            file.file_name().unwrap().to_str().unwrap(),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            report(&file.display().to_string(), &out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    }
}

#[test]
fn unreadable_configs_are_one_clear_line() {
    let tmp = std::env::temp_dir().join(format!("hivesup-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let missing = check_in(&tmp, "nope.toml");
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "hivesup: failed to read config nope.toml: No such file or directory (os error 2)\n"
    );
    std::fs::create_dir_all(tmp.join("adir")).unwrap();
    let dir = check_in(&tmp, "adir");
    assert_eq!(dir.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&dir.stderr),
        "hivesup: failed to read config adir: Is a directory (os error 21)\n"
    );
    std::fs::write(
        tmp.join("latin1.toml"),
        b"[programs.a]\ncommand = \"caf\xe9\"\n",
    )
    .unwrap();
    let bin = check_in(&tmp, "latin1.toml");
    assert_eq!(bin.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bin.stderr),
        "latin1.toml:2:15: the file is not valid UTF-8\n"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn config_path_comes_from_the_environment_when_no_flag() {
    let dir = root().join("tests/configs/good");
    let out = hivesup()
        .arg("check")
        .env("HIVESUP_CONFIG", dir.join("full.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", report("env", &out));
    let out = hivesup()
        .arg("check")
        .env("HIVESUP_CONFIG", dir.join("does-not-exist.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.toml"));
}

#[test]
fn supervise_mode_refuses_a_bad_config_with_exit_2_and_starts_nothing() {
    let dir = root().join("tests/configs/bad");
    let out = hivesup()
        .current_dir(&dir)
        .args(["--config", "values.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", report("supervise", &out));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("values.toml:2:20: "));
}
