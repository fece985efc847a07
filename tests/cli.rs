//! The `netmorph` command end to end on a tiny image folder: every subcommand, and wrong values
//! refused with errors that name them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the command with the kernels of the built-in rules (repeatable, and no tuning time), unless
/// the arguments ask for tuning.
fn netmorph(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netmorph")).env("NETMORPH_TUNING", "off").args(args).output().expect("run netmorph")
}

/// A search's options for one small model, one epoch, no final fit and no report.
const ONE_QUICK_MODEL: [&str; 13] =
    ["--max-models", "1", "--width", "4", "--blocks", "1", "--max-epochs", "1", "--batch-size", "8", "--final-epochs", "0", "--no-report"];

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn succeeds(args: &[&str]) -> String {
    let out = netmorph(args);
    assert!(out.status.success(), "netmorph {args:?} failed:\n{}", text(&out));
    text(&out)
}

/// A folder of 10x10 RGB PNGs, one subfolder per class: each class a colour, with noise.
fn image_folder(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    for (class, rgb) in [("red", [200u8, 30, 30]), ("green", [30, 200, 30]), ("blue", [30, 30, 200])] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..15u32 {
            let image = image::RgbImage::from_fn(10, 10, |x, y| {
                let noise = ((x * 7 + y * 13 + i * 29) % 40) as u8;
                image::Rgb(rgb.map(|c| c.saturating_add(noise)))
            });
            let path = dir.join(format!("{i}.png"));
            image.save(&path).unwrap();
            files.push(path);
        }
    }
    files
}

/// Each image's class probabilities from the ONNX file, run by tract on pixels / 255.
fn run_onnx(model: &Path, files: &[&str]) -> Vec<Vec<f32>> {
    use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoRunnable, Tensor};
    let paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    let pixels: Vec<f32> = netmorph::data::read_images(&paths, 3, 10, 10, false).unwrap().iter().map(|&b| b as f32 / 255.0).collect();
    let model = tract_onnx::onnx().model_for_path(model).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let input = Tensor::from_shape(&[files.len(), 3, 10, 10], &pixels).unwrap();
    let out = model.run(tvec!(input.into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().rows().into_iter().map(|r| r.to_vec()).collect()
}

/// A search with kernel tuning measures its products' kernels and keeps the choices, and a
/// second search on the same adapter starts from them.
#[test]
fn kernel_choices_are_measured_once_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data);
    let cache = tmp.path().join("cache");
    let search = |name: &str| {
        let dir = tmp.path().join(name);
        let args = [
            "search",
            data.to_str().unwrap(),
            "--search-dir",
            dir.to_str().unwrap(),
            "--kernel-tuning",
            // Far above what it needs (2 s here when idle), so that a loaded machine does not
            // reach the cap and leave classes to the second search.
            "600",
            "--time-limit",
            "5m",
        ]
        .into_iter()
        .chain(ONE_QUICK_MODEL);
        let out = Command::new(env!("CARGO_BIN_EXE_netmorph")).env("NETMORPH_CACHE_DIR", &cache).args(args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let out = text(&out);
        let line = out.lines().find(|l| l.starts_with("kernel tuning: ")).unwrap_or_else(|| panic!("no tuning line:\n{out}")).to_string();
        let count = |what: &str| -> usize {
            let before = line.split(what).next().unwrap();
            before.split_whitespace().last().unwrap().parse().unwrap_or_else(|_| panic!("{line}"))
        };
        (count(" problem classes measured"), count(" choices loaded"), line)
    };
    let (measured, loaded, line) = search("first");
    assert!(measured >= 3 && loaded == 0 && !line.contains("left to the rules"), "{line}");
    let tables: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(tables.len() == 1 && tables[0].starts_with("kernels-") && tables[0].ends_with(".json"), "{tables:?}");
    let (measured, loaded, line) = search("second");
    assert!(measured == 0 && loaded >= 3, "the second search measures nothing again: {line}");
}

#[test]
fn every_subcommand_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let files = image_folder(&data);
    let search_dir = tmp.path().join("search");
    let (data_arg, search_arg) = (data.to_str().unwrap(), search_dir.to_str().unwrap());

    let out = succeeds(&[
        "search",
        data_arg,
        "--search-dir",
        search_arg,
        "--time-limit",
        "5m",
        "--max-models",
        "2",
        "--width",
        "4",
        "--blocks",
        "1",
        "--max-epochs",
        "2",
        "--child-epochs",
        "1",
        "--batch-size",
        "8",
        "--final-epochs",
        "1",
        "--seed",
        "3",
    ]);
    assert!(out.contains("36 training and 9 test images") && out.contains("3x10x10, 3 classes"), "{out}");
    assert!(out.contains("Test accuracy"), "{out}");
    for file in
        ["final.json", "final.safetensors", "final.onnx", "history.jsonl", "report.html", "report.json", "suspects.csv", "models.csv"]
    {
        assert!(search_dir.join(file).is_file(), "the search wrote no {file}:\n{out}");
    }
    // The final model averages five shifted copies by default, and says so; the predictions
    // below compare its ONNX file (which stacks and averages the copies) with `predict`.
    let final_json = std::fs::read_to_string(search_dir.join("final.json")).unwrap();
    assert!(final_json.contains("\"test_time_shifts\":[[0,0],[1,0],[-1,0],[0,1],[0,-1]]"), "{final_json}");
    assert!(out.contains("averages 5 shifted copies"), "{out}");
    // The search's own report opens in a real browser with every section, and names the files.
    let page = search_dir.join("report.html");
    let rendered = netmorph::testing::browser::check_self_contained(&page, 1280, 1600, &netmorph::report::page::SECTIONS)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rendered.dom.contains("model 0") && rendered.dom.contains("red"), "the models and the classes are drawn");

    // The report alone, of the data (no device needed), and rebuilt from the search directory.
    let data_report = tmp.path().join("data-report");
    let out = succeeds(&["report", data_arg, "--out", data_report.to_str().unwrap()]);
    assert!(out.contains("report.html"), "{out}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(data_report.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["health"]["classes"]["train"].as_array().unwrap().len(), 3, "{json}");
    assert!(json["search"].is_null() && json["train_labels"].is_null());
    let rebuilt = tmp.path().join("rebuilt");
    succeeds(&[
        "report",
        data_arg,
        "--search-dir",
        search_arg,
        "--out",
        rebuilt.to_str().unwrap(),
        "--label-folds",
        "2",
        "--label-epochs",
        "1",
        "--batch-size",
        "8",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(rebuilt.join("report.json")).unwrap()).unwrap();
    assert!(json["search"]["records"].as_array().is_some_and(|r| !r.is_empty()), "the search is drawn");
    assert!(json["evaluation"]["predicted"].as_array().is_some_and(|p| p.len() == 9), "the final model predicts the 9 test images");
    assert_eq!(json["train_labels"]["examined"], 36);
    // Without a search: a given architecture's label check and a saved model's test predictions.
    let given = tmp.path().join("given");
    let architecture = search_dir.join("models/model_0.json");
    let model = format!("{search_arg}/final");
    succeeds(&[
        "report",
        data_arg,
        "--out",
        given.to_str().unwrap(),
        "--architecture",
        architecture.to_str().unwrap(),
        "--model",
        &model,
        "--label-folds",
        "2",
        "--label-epochs",
        "1",
        "--batch-size",
        "8",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(given.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["train_labels"]["examined"], 36, "{json}");
    assert_eq!(json["evaluation"]["predicted"].as_array().map(|p| p.len()), Some(9));
    assert!(json["search"].is_null());
    // A new search without what the report flagged: these noisy one-colour images are near copies
    // of each other, so some training images have one in the test set; no suspect reaches 1.
    let out = succeeds(
        &[
            "search",
            data_arg,
            "--search-dir",
            tmp.path().join("again").to_str().unwrap(),
            "--exclude-flagged",
            rebuilt.to_str().unwrap(),
            "--exclude-confidence",
            "1",
        ]
        .into_iter()
        .chain(ONE_QUICK_MODEL)
        .collect::<Vec<_>>(),
    );
    let leaks = json["health"]["duplicates"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["a"]["split"] != p["b"]["split"])
        .map(|p| p["a"]["index"].as_u64())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(leaks > 0 && out.contains(&format!("Left out {leaks} training images")), "{leaks} leaks: {out}");
    assert!(out.contains("0 label suspects of confidence 1 or more"), "{out}");

    let summary = succeeds(&["summary", search_arg]);
    assert!(summary.contains("Classes: blue, green, red"), "{summary}");
    assert!(summary.contains("normalised per channel"), "colour input is normalised by default:\n{summary}");
    assert!(summary.contains("Test-time augmentation: the mean over 5 shifted copies"), "{summary}");

    let onnx = tmp.path().join("exported.onnx");
    succeeds(&["export", &format!("{search_arg}/final"), "--onnx", onnx.to_str().unwrap()]);
    assert_eq!(std::fs::read(&onnx).unwrap(), std::fs::read(search_dir.join("final.onnx")).unwrap(), "the same model, the same file");

    let evaluation = succeeds(&["evaluate", &format!("{search_arg}/final.json"), data_arg, "--split", "all"]);
    assert!(evaluation.contains("on 45 images"), "{evaluation}");
    // The saved model's shifts can be replaced for one command: here none, the plain images.
    let plain = succeeds(&["evaluate", &format!("{search_arg}/final.json"), data_arg, "--split", "all", "--test-time-shifts", "none"]);
    assert!(plain.contains("on 45 images"), "{plain}");
    let plain_onnx = tmp.path().join("plain.onnx");
    succeeds(&["export", &format!("{search_arg}/final"), "--onnx", plain_onnx.to_str().unwrap(), "--test-time-shifts", "none"]);
    let (with, without) = (std::fs::read(search_dir.join("final.onnx")).unwrap(), std::fs::read(&plain_onnx).unwrap());
    assert!(without.len() < with.len(), "no Pad, Slice and ReduceMean nodes without shifts");

    let csv_path = tmp.path().join("predictions.csv");
    let picked = [files[0].to_str().unwrap(), files[20].to_str().unwrap(), files[40].to_str().unwrap()];
    succeeds(&[&["predict", search_arg, "--output", csv_path.to_str().unwrap()][..], &picked].concat());
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "file,class,probability");
    assert_eq!(lines.len(), 4, "{csv}");
    let onnx_probabilities = run_onnx(&search_dir.join("final.onnx"), &picked);
    for ((line, file), onnx) in lines[1..].iter().zip(picked).zip(onnx_probabilities) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], file);
        assert!(["red", "green", "blue"].contains(&fields[1]), "{line}");
        let p: f32 = fields[2].parse().unwrap();
        assert!((1.0 / 3.0 - 1e-6..=1.0).contains(&p), "the top class's probability: {line}");
        // The exported file, fed pixels / 255, agrees with the command (classes sort: blue, green, red).
        let top = onnx.iter().enumerate().fold(0, |b, (i, &q)| if q > onnx[b] { i } else { b });
        assert_eq!(["blue", "green", "red"][top], fields[1], "ONNX {onnx:?} against {line}");
        assert!((onnx[top] - p).abs() < 1e-4, "ONNX {onnx:?} against {line}");
    }

    let trained = tmp.path().join("trained/model");
    let architecture = search_dir.join("models/model_0.json");
    let out = succeeds(&[
        "train",
        data_arg,
        "--model",
        architecture.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        trained.to_str().unwrap(),
        "--test-time-shifts",
        "square",
    ]);
    assert!(out.contains("Test loss"), "{out}");
    for ext in ["json", "safetensors", "onnx"] {
        assert!(trained.with_extension(ext).is_file(), "train wrote no .{ext}");
    }
    let shifts = netmorph::graph::Graph::load_architecture(&trained.with_extension("json")).unwrap().test_time_shifts().to_vec();
    assert_eq!(shifts.len(), 9, "--test-time-shifts square: {shifts:?}");
}

#[test]
fn wrong_values_get_errors_that_name_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data);
    let d = data.to_str().unwrap();
    let dir = tmp.path().join("never");
    let s = dir.to_str().unwrap();
    for (args, expected) in [
        (vec!["search", d, "--search-dir", s, "--time-limit", "1e30"], "--time-limit"),
        (vec!["search", d, "--search-dir", s, "--model-share", "NaN"], "--model-share"),
        (vec!["search", d, "--search-dir", s, "--final-share", "1"], "--final-share"),
        (vec!["search", d, "--search-dir", s, "--batch-size", "0"], "--batch-size"),
        (vec!["search", d, "--search-dir", s, "--lr", "-1"], "--lr"),
        (vec!["search", d, "--search-dir", s, "--label-smoothing", "1"], "'--label-smoothing <EPS>': `1` is not a label smoothing"),
        (vec!["train", d, "--model", d, "--label-smoothing", "NaN"], "'--label-smoothing <EPS>': `NaN`"),
        (vec!["search", d, "--search-dir", s, "--weight-decay", "-0.1"], "'--weight-decay <W>': `-0.1`"),
        (vec!["search", d, "--search-dir", s, "--optimizer", "adadelta", "--weight-decay", "0.01"], "--weight-decay 0.01: adadelta"),
        (vec!["search", d, "--search-dir", s, "--rotate", "46"], "--rotate"),
        (vec!["search", d, "--search-dir", s, "--scale", "0.5"], "--scale"),
        (vec!["search", d, "--search-dir", s, "--elastic", "NaN"], "--elastic"),
        (vec!["search", d, "--search-dir", s, "--cutout", "-3"], "--cutout"),
        (vec!["search", d, "--search-dir", s, "--cutout", "1000"], "--cutout 1000"),
        (vec!["search", d, "--search-dir", s, "--batch-size", "0"], "--batch-size 0"),
        (vec!["search", d, "--search-dir", s, "--batch-size", "many"], "--batch-size"),
        (vec!["search", d, "--search-dir", s, "--width", "wide"], "--width"),
        (vec!["search", d, "--search-dir", s, "--test-time-shifts", "diagonal"], "'--test-time-shifts <COPIES>'"),
        (
            vec!["search", d, "--search-dir", s, "--resize", "1x1", "--test-time-shifts", "cross"],
            "--test-time-shifts cross: graph input: test-time shift [1, 0] moves a 1x1 image out of its frame",
        ),
        (vec!["search", d, "--search-dir", s, "--resize", "0x8"], "--resize"),
        (vec!["search", d, "--search-dir", s, "--downsample", "11"], "factor of 11"),
        (vec!["search", "/no/such/folder", "--search-dir", s], "/no/such/folder"),
        (vec!["search", d, "--search-dir", s, "--label-folds", "1"], "--label-folds"),
        (vec!["search", d, "--search-dir", s, "--exclude-flagged", "/no/such/report"], "/no/such/report"),
        (vec!["report", d, "--duplicate-threshold", "2"], "--duplicate-threshold"),
        (vec!["report", d, "--search-dir", "/no/such/search"], "/no/such/search"),
        (vec!["report", d, "--model", "/no/such/model"], "/no/such/model.json"),
        (vec!["report", d, "--architecture", "/no/such/graph.json"], "/no/such/graph.json"),
        (vec!["evaluate", "/no/such/model", d], "/no/such/model.json"),
        (vec!["train", d, "--model", d], d),
        (vec!["summary", d], "neither model.json nor final.json"),
        (vec!["search", d, "--storage", "postgres://nobody@127.0.0.1:1/db"], "--storage needs --study"),
        (vec!["search", d, "--storage", "postgres://nobody@127.0.0.1:1/db", "--study", "s", "--resume"], "--resume is for --search-dir"),
        (
            vec!["search", d, "--storage", "postgres://nobody:secret@127.0.0.1:1/db", "--study", "s"],
            "cannot connect to the database at postgres://nobody:***@127.0.0.1:1/db",
        ),
        (vec!["search", d, "--storage", "postgres://127.0.0.1:1/db", "--study", "s", "--lease", "0.5s"], "--lease"),
        (vec!["status", "--search-dir", s], "no search here"),
    ] {
        let out = netmorph(&args);
        let said = text(&out);
        assert!(!out.status.success(), "netmorph {args:?} succeeded:\n{said}");
        assert!(said.contains(expected), "netmorph {args:?} does not name `{expected}`:\n{said}");
        assert!(!said.contains("panicked"), "netmorph {args:?} panicked:\n{said}");
        assert!(!said.contains("secret"), "netmorph {args:?} printed a password:\n{said}");
    }
    assert!(!dir.exists(), "a refused command wrote nothing");
}
