//! Many processes, one search: real `autokeras_search` processes on one PostgreSQL study (a
//! throwaway server the test starts), one of them killed with SIGKILL; and a search directory
//! that a second process cannot open while the first runs it. Kept small for CI: 14x14 MNIST, a
//! few hundred images, a narrow generator, one or two epochs per model.

use netmorph::search::store::{PgStore, Status, Store, DEFAULT_LEASE, FINAL_OUTCOME};
use netmorph::testing::postgres::PostgresServer;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `autokeras_search` with the tests' small settings, `changed` replacing some of them.
fn search_with(max_models: usize, changed: &[(&str, &str)]) -> Command {
    let max_models = max_models.to_string();
    let mut settings = vec![
        ("--time-limit", "10m"),
        ("--train-limit", "500"),
        ("--test-limit", "200"),
        ("--downsample", "2"),
        ("--width", "8"),
        ("--blocks", "2"),
        ("--max-epochs", "2"),
        ("--child-epochs", "1"),
        ("--batch-size", "32"),
        ("--seed", "7"),
        ("--final-epochs", "1"),
        ("--max-models", max_models.as_str()),
    ];
    for (flag, value) in changed {
        settings.iter_mut().filter(|(f, _)| f == flag).for_each(|s| s.1 = value);
    }
    let mut cmd = Command::new(netmorph::testing::example_binary("autokeras_search"));
    cmd.env("NETMORPH_TUNING", "off");
    for (flag, value) in settings {
        cmd.args([flag, value]);
    }
    cmd
}

fn search_command(max_models: usize) -> Command {
    search_with(max_models, &[])
}

fn worker(server: &PostgresServer, study: &str, max_models: usize, export: &Path) -> Command {
    let mut cmd = search_command(max_models);
    cmd.args(["--storage", &server.url(), "--study", study, "--lease", "3s", "--export", export.to_str().unwrap()]);
    // A study's report goes to `<study>-report` in the working directory, the repository's here;
    // reports have tests of their own.
    cmd.arg("--no-report");
    cmd
}

fn text(output: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn wait_until(what: &str, child: &mut Child, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "the worker ended before {what}");
        assert!(start.elapsed() < Duration::from_secs(300), "no {what} after 5 minutes");
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn workers_share_a_study_and_a_killed_workers_model_is_trained_again() {
    let server = PostgresServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let reader = PgStore::open(&server.url(), "mnist", "test", DEFAULT_LEASE).unwrap();

    // The first worker trains the generator's model, then a child, and dies with SIGKILL in it.
    let mut first = worker(&server, "mnist", 8, &tmp.path().join("first")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("a child in training", &mut first, || {
        let state = reader.state().unwrap();
        !state.records.is_empty() && !state.running.is_empty()
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = reader.state().unwrap();
    let lost = killed.running[0].clone();

    // Three more workers join; one of them takes the lost trial over after its 3 s lease.
    let spawn =
        |name: &str| worker(&server, "mnist", 8, &tmp.path().join(name)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let workers = [spawn("second"), spawn("third"), spawn("fourth")];
    let finished: Vec<Output> = workers.into_iter().map(|w| w.wait_with_output().unwrap()).collect();
    let outputs: Vec<String> = finished.iter().map(text).collect();
    assert!(finished.iter().all(|o| o.status.success()), "{}", outputs.join("\n---\n"));

    let state = reader.state().unwrap();
    assert!(state.running.is_empty(), "{:?}", state.running);
    assert_eq!(state.records.iter().map(|r| r.id).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>(), "each trial once");
    assert!(state.records.iter().all(|r| r.status == Status::Finished), "{:?}", state.records);
    let architectures: std::collections::HashSet<String> = state.records.iter().map(|r| r.architecture.to_string()).collect();
    assert_eq!(architectures.len(), 8, "an architecture was trained twice");
    // What the killed worker finished stays as it was, and nobody trains it again.
    for before in &killed.records {
        assert_eq!(serde_json::to_value(&state.records[before.id]).unwrap(), serde_json::to_value(before).unwrap());
        assert!(outputs.iter().all(|o| !o.contains(&format!("Training model {} ", before.id))), "model {} trained again", before.id);
    }
    let retrained = &state.records[lost.id];
    assert!(retrained.worker != lost.worker, "the lost trial was finished by its dead worker: {retrained:?}");
    assert!(outputs.iter().any(|o| o.contains(&format!("trial {} was", lost.id)) && o.contains("attempt 2")), "{outputs:?}");
    // The final step ran once, on one worker, and its outcome is in the study.
    let finals = outputs.iter().filter(|o| o.contains("Test accuracy")).count();
    let others = outputs.iter().filter(|o| o.contains("Another worker of study `mnist`")).count();
    assert_eq!((finals, others), (1, 2), "{outputs:?}");
    let outcome = reader.get(FINAL_OUTCOME).unwrap().expect("the final step's outcome");
    // (A model this small, trained for a few seconds, is near chance: its figure is only read.)
    assert!(outcome["test_accuracy"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{outcome}");
    let members: Vec<usize> = serde_json::from_value(outcome["ensemble"].clone()).unwrap();
    assert!(!members.is_empty() && members.iter().all(|&m| m < 8), "{outcome}");
    assert!(reader.get_file("final.safetensors").unwrap().is_some_and(|w| !w.is_empty()));

    // --status shows the study from anywhere.
    let status = search_command(8).args(["--status", "--storage", &server.url(), "--study", "mnist"]).output().unwrap();
    let shown = text(&status);
    assert!(
        status.status.success() && shown.contains("8 trials: 0 running, 8 finished, 0 failed") && shown.contains("Best so far"),
        "{shown}"
    );
    // A worker with other settings is refused, naming them.
    let mut other = search_with(8, &[("--batch-size", "64")]);
    let other = other.args(["--storage", &server.url(), "--study", "mnist"]).output().unwrap();
    let refused = text(&other);
    assert!(!other.status.success() && refused.contains("batch_size: stored 32, this run 64"), "{refused}");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netmorph-workers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_search_directory_runs_one_process_at_a_time() {
    let dir = temp_dir("locked");
    let run = |extra: &[&str]| search_command(20).args(["--search-dir", dir.to_str().unwrap()]).args(extra).output().unwrap();
    let mut first =
        search_command(8).args(["--search-dir", dir.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let history = dir.join("history.jsonl");
    wait_until("a first model", &mut first, || std::fs::read_to_string(&history).is_ok_and(|t| t.lines().count() >= 1));
    for extra in [&[][..], &["--resume"][..]] {
        let before = std::fs::read(&history).unwrap();
        let second = run(extra);
        let said = text(&second);
        assert!(!second.status.success(), "a second process ran the locked directory: {said}");
        assert!(said.contains(&format!("is in use by process {}", first.id())) && said.contains(dir.to_str().unwrap()), "{said}");
        // It changed nothing (the first may have added a model meanwhile).
        assert!(std::fs::read(&history).unwrap().starts_with(&before));
    }
    // The first finishes with its history whole: each model once, in order.
    assert!(first.wait().unwrap().success(), "the first search failed");
    let ids: Vec<u64> = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..8).collect::<Vec<u64>>());
    // A resume with another width or batch size is refused, naming the setting.
    let resume_with =
        |changed: &[(&str, &str)]| search_with(20, changed).args(["--search-dir", dir.to_str().unwrap(), "--resume"]).output().unwrap();
    let wider = resume_with(&[("--width", "16")]);
    assert!(text(&wider).contains("was started with --width 8, and this run asks for --width 16"), "{}", text(&wider));
    let batch = resume_with(&[("--batch-size", "64")]);
    assert!(text(&batch).contains("batch_size: stored 32, this run 64"), "{}", text(&batch));
    std::fs::remove_dir_all(&dir).unwrap();
}
