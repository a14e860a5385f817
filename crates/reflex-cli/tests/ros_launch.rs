//! The launch files start what they promise. reflex_bringup is installed into a temporary
//! prefix as colcon would (`scripts/install-ros-package.sh`); the command lines its Python and
//! XML launch files produce are read as launch_ros would build them
//! (`tests/interop/launch_commands.py`: the launch system itself is not installable here), must
//! agree, and are then run exactly: the simulated arm and the Reflex node talk over DDS, the
//! scripted expert finishes episodes, and SIGTERM brakes the arm and ends both cleanly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn commands(file: &str, prefix: &Path, out: &Path, overrides: &[&str]) -> serde_json::Value {
    let o = Command::new("python3")
        .arg(repo().join("tests/interop/launch_commands.py"))
        .arg(repo().join("launch/launch").join(file))
        .arg(prefix)
        .arg(out)
        .args(overrides)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The command lines with the generated parameter file's name blanked (it differs by file).
fn comparable(nodes: &serde_json::Value) -> Vec<Vec<String>> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["cmd"].as_array())
        .map(|c| {
            c.iter()
                .map(|a| {
                    let a = a.as_str().unwrap();
                    if a.contains("launch_params_") {
                        "<generated>".to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        })
        .collect()
}

/// Installs reflex_bringup with this build's binary into a fresh `<tmp>/install` (the test's
/// temporary directory is named by `tag`); returns the directory, the prefix and `<tmp>/gen`
/// for the generated parameter files.
fn install_package(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let tmp = std::env::temp_dir().join(format!("reflex-launch{tag}-{}", std::process::id()));
    let prefix = tmp.join("install");
    let gen = tmp.join("gen");
    std::fs::create_dir_all(&gen).unwrap();
    let st = Command::new(repo().join("scripts/install-ros-package.sh"))
        .arg(&prefix)
        .arg(env!("CARGO_BIN_EXE_reflex"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    (tmp, prefix, gen)
}

/// The names of the nodes a launch file starts, in order.
fn node_names(nodes: &serde_json::Value) -> Vec<&str> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect()
}

/// Starts `cmd`; its log goes to `log` (a pipe nobody drains would stall it).
fn start(cmd: &[String], cwd: &Path, domain: &str, log: &Path) -> Child {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .current_dir(cwd)
        .env("ROS_DOMAIN_ID", domain)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn sigterm(c: &Child) {
    // SAFETY: kill(2) on a child we own.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGTERM);
    }
}

#[test]
fn the_launch_files_start_a_reflex_node_that_drives_the_simulated_arm() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "the_launch_files_start_a_reflex_node_that_drives_the_simulated_arm",
    ) {
        return;
    }
    let (tmp, prefix, gen) = install_package("");
    assert!(prefix
        .join("share/ament_index/resource_index/packages/reflex_bringup")
        .exists());
    let py = commands("reflex_bringup.launch.py", &prefix, &gen, &[]);
    let xml = commands("reflex_bringup.launch.xml", &prefix, &gen, &[]);
    assert_eq!(
        comparable(&py),
        comparable(&xml),
        "the two launch files agree"
    );
    let names = node_names(&py);
    assert_eq!(names, ["robot_state_publisher", "reflex_sim_arm", "reflex"]);
    // sim:=false leaves the simulated arm out.
    for file in ["reflex_bringup.launch.py", "reflex_bringup.launch.xml"] {
        let real = commands(file, &prefix, &gen, &["sim:=false"]);
        let names = node_names(&real);
        assert_eq!(names, ["robot_state_publisher", "reflex"], "{file}");
    }

    let cmds = comparable(&py);
    let run_cmd: Vec<String> = py[2]["cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let share = prefix.join("share/reflex_bringup");
    let domain = "83";
    let mut arm = start(&cmds[0], &share, domain, &tmp.join("arm.log"));
    let mut node = start(&run_cmd, &share, domain, &tmp.join("node.log"));
    // Long enough for discovery and two 6 s episodes.
    let until = Instant::now() + Duration::from_secs(16);
    while Instant::now() < until {
        if let Ok(Some(s)) = node.try_wait() {
            panic!(
                "the Reflex node exited early ({s}): {}",
                std::fs::read_to_string(tmp.join("node.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&node);
    let out = node.wait_with_output().unwrap();
    sigterm(&arm);
    let arm_status = arm.wait().unwrap();
    let _ = arm.stdout.take();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "node: {}",
        std::fs::read_to_string(tmp.join("node.log")).unwrap_or_default()
    );
    assert!(arm_status.success());
    // "pick_cube over ROS 2: N/M episodes succeeded ..."
    let line = stdout
        .lines()
        .find(|l| l.contains("over ROS 2"))
        .expect("a report");
    let counts = line.split(": ").nth(1).unwrap().split(' ').next().unwrap();
    let (won, ran) = counts.split_once('/').unwrap();
    let (won, ran): (u32, u32) = (won.parse().unwrap(), ran.parse().unwrap());
    assert!(ran >= 1, "{line}");
    assert_eq!(won, ran, "the scripted expert succeeds over DDS: {line}");
    assert!(stdout.contains("came to rest: true"), "{stdout}");
    std::fs::remove_dir_all(&tmp).ok();
}

/// `train:=true`: both launch files start `reflex ros train` instead of `reflex ros run`, with
/// the same command line; run exactly (with a one-episode configuration), it trains through DDS
/// against the simulated arm the launch file also starts and writes its run directory.
#[test]
fn the_launch_files_start_training_against_the_simulated_arm() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "the_launch_files_start_training_against_the_simulated_arm",
    ) {
        return;
    }
    let (tmp, prefix, gen) = install_package("-train");
    let config = tmp.join("tiny.toml");
    std::fs::write(
        &config,
        "demo_episodes = 1\nmax_env_steps = 10\neval_episodes = 1\nheldout_episodes = 0\nminutes = 2.0\n",
    )
    .unwrap();
    let out = tmp.join("run");
    let overrides = [
        "train:=true".to_string(),
        format!("train_config:={}", config.display()),
        format!("out:={}", out.display()),
    ];
    let overrides: Vec<&str> = overrides.iter().map(|s| s.as_str()).collect();
    let py = commands("reflex_bringup.launch.py", &prefix, &gen, &overrides);
    let xml = commands("reflex_bringup.launch.xml", &prefix, &gen, &overrides);
    assert_eq!(
        comparable(&py),
        comparable(&xml),
        "the two launch files agree"
    );
    let cmds = comparable(&py);
    assert_eq!(cmds.len(), 2, "{py}");
    assert_eq!(&cmds[1][1..3], ["ros", "train"], "{py}");
    let train_cmd: Vec<String> = py[2]["cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let share = prefix.join("share/reflex_bringup");
    let domain = "84";
    let mut arm = start(&cmds[0], &share, domain, &tmp.join("arm.log"));
    let node = start(&train_cmd, &share, domain, &tmp.join("node.log"));
    let out_node = node.wait_with_output().unwrap();
    sigterm(&arm);
    assert!(arm.wait().unwrap().success());
    let _ = arm.stdout.take();
    let log = std::fs::read_to_string(tmp.join("node.log")).unwrap_or_default();
    assert!(out_node.status.success(), "node: {log}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(summary["env_steps"].as_u64().unwrap() >= 10, "{summary}");
    assert_eq!(summary["stop_reason"], "step budget", "{summary}");
    assert!(out.join("policy.safetensors").exists());
    std::fs::remove_dir_all(&tmp).ok();
}

/// `detector:=true`: both launch files add the success detector (`reflex ros detect`) with its
/// parameter file, the same command line from each. Run exactly, the installed parameter file is
/// accepted (every parameter known, each value in range) and the node then stops on the
/// classifier the test did not train, naming the argument: no DDS participant is made.
#[test]
fn the_launch_files_start_a_success_detector_with_its_parameter_file() {
    if reflex_ros::netns::run_test_in_loopback_namespace(
        "the_launch_files_start_a_success_detector_with_its_parameter_file",
    ) {
        return;
    }
    let (tmp, prefix, gen) = install_package("-detector");
    let classifier = tmp.join("no-classifier");
    let set = [
        "detector:=true".to_string(),
        format!("classifier:={}", classifier.display()),
    ];
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    let py = commands("reflex_bringup.launch.py", &prefix, &gen, &set);
    let xml = commands("reflex_bringup.launch.xml", &prefix, &gen, &set);
    assert_eq!(
        comparable(&py),
        comparable(&xml),
        "the two launch files agree"
    );
    let names = node_names(&py);
    assert_eq!(
        names,
        [
            "robot_state_publisher",
            "reflex_sim_arm",
            "reflex",
            "reflex_success_detector"
        ]
    );
    let cmd = comparable(&py).pop().unwrap();
    let share = prefix.join("share/reflex_bringup");
    assert_eq!(
        cmd[1..5],
        [
            "ros",
            "detect",
            "--classifier",
            &classifier.display().to_string()
        ]
    );
    let file = share
        .join("config/success_detector.yaml")
        .display()
        .to_string();
    assert!(cmd.contains(&file), "{cmd:?}");
    // Runs a command line from the package's share folder; it must fail, and its stderr is returned.
    let refused = |cmd: &[String]| {
        let out = Command::new(&cmd[0])
            .args(&cmd[1..])
            .current_dir(&share)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&cmd);
    assert!(
        err.contains("--classifier") && err.contains("no-classifier"),
        "{err}"
    );
    // A parameter the detector does not know is refused by name, before the classifier.
    let mut typo = cmd.clone();
    typo.extend(["-p".into(), "end_afterr:=3".into()]);
    let err = refused(&typo);
    assert!(err.contains("end_afterr"), "{err}");
    std::fs::remove_dir_all(&tmp).ok();
}
