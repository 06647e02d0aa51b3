//! A smoke run of the benchmark (bench/compare.py): one phase, one run,
//! both tools, so the script and the Terraform configuration don't rot.
//! The benchmark itself is run by hand; its numbers are in bench/results.

#[test]
fn benchmark_script_runs_one_phase_of_both_tools() {
    if crate::common::terraform().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("numbers.json");
    let run = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/compare.py"))
        .args(["--runs", "1", "--phases", "plan", "--binary"])
        .arg(env!("CARGO_BIN_EXE_ihp-infra"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let numbers: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let results = numbers["results"].as_array().unwrap();
    for tool in ["ihp-infra", "terraform"] {
        let r = results
            .iter()
            .find(|r| r["tool"] == tool && r["phase"] == "plan")
            .unwrap_or_else(|| panic!("no plan of {tool}: {numbers:#}"));
        assert!(r["seconds"].as_f64().unwrap() > 0.0, "{r}");
        // Terraform's plan of an empty state only reads its data source (the
        // image lookup): 2 calls. ihp-infra looks at the account: about 20.
        let least = if tool == "terraform" { 1 } else { 10 };
        assert!(
            r["calls"].as_u64().unwrap() >= least,
            "the emulator counted calls: {r}"
        );
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 1.0, "{r}");
    }
    assert!(stdout.contains("| plan |"), "a table: {stdout}");
}
