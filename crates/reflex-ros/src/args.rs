//! The ROS 2 command line a launch file appends to a node's own arguments, and the parameter
//! files it names: `--ros-args -r __node:=NAME -r __ns:=NS -r from:=to -p name:=value
//! --params-file FILE`. rcl parses these for C++ and Python nodes; a Rust binary parses them
//! here, with the same rules.
//!
//! Parameter files have the `node: {ros__parameters: {...}}` form; the node key may be the node's
//! name, its fully qualified name, or a wildcard (`/**`, `/*/name`). Nested maps become dotted
//! names (`limits: {joint_vel_max_rad_s: [...]}` is `limits.joint_vel_max_rad_s`). Files apply
//! in order, then every `-p` in order: the last assignment wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parameter's value, as ROS 2 types them.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    /// `true` / `false`.
    Bool(bool),
    /// A 64-bit integer.
    Integer(i64),
    /// A double.
    Double(f64),
    /// A string.
    String(String),
    /// An array of booleans.
    BoolArray(Vec<bool>),
    /// An array of integers.
    IntegerArray(Vec<i64>),
    /// An array of doubles (integers in a mixed array are read as doubles).
    DoubleArray(Vec<f64>),
    /// An array of strings.
    StringArray(Vec<String>),
}

impl ParamValue {
    /// The ROS type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Bool(_) => "bool",
            ParamValue::Integer(_) => "integer",
            ParamValue::Double(_) => "double",
            ParamValue::String(_) => "string",
            ParamValue::BoolArray(_) => "bool array",
            ParamValue::IntegerArray(_) => "integer array",
            ParamValue::DoubleArray(_) => "double array",
            ParamValue::StringArray(_) => "string array",
        }
    }
}

/// Where a parameter's value came from (a file, or the command line).
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A parameter file.
    File(PathBuf),
    /// A `-p name:=value` argument.
    CommandLine,
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::CommandLine => write!(f, "the command line (-p)"),
            Source::Default => write!(f, "the default"),
        }
    }
}

/// A bad ROS command line or parameter file. Every variant names the argument, file or key.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// An argument the ROS 2 grammar does not have, or one missing its value.
    #[error("--ros-args: {0}")]
    Argument(String),
    /// A parameter file could not be read.
    #[error("parameter file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A parameter file is not valid YAML or not in the `node: ros__parameters:` form.
    #[error("parameter file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// A node's ROS 2 arguments, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RosArgs {
    /// `-r __node:=NAME`.
    pub node_name: Option<String>,
    /// `-r __ns:=NS`.
    pub namespace: Option<String>,
    /// Topic and service remaps `from:=to`, in order.
    pub remaps: Vec<(String, String)>,
    /// `--params-file FILE`, in order.
    pub params_files: Vec<PathBuf>,
    /// `-p name:=value`, in order (values parsed as YAML scalars or flow lists, as rcl does).
    pub overrides: Vec<(String, ParamValue)>,
    /// `--log-level LEVEL` (e.g. `debug`, or `reflex:=debug`).
    pub log_level: Option<String>,
}

impl RosArgs {
    /// Parses the arguments that follow `--ros-args` (the flag itself may be included, and may
    /// repeat; a lone `--` ends the ROS section, and everything after it is refused here because
    /// it belongs to the program).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, ArgsError> {
        let mut out = RosArgs::default();
        let mut it = args.iter().map(|s| s.as_ref());
        while let Some(a) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .map(str::to_owned)
                    .ok_or_else(|| ArgsError::Argument(format!("`{flag}` needs a value")))
            };
            match a {
                "--ros-args" => {}
                "--" => {
                    return Err(ArgsError::Argument(
                        "arguments after `--` belong to the program and must come before \
                         `--ros-args`"
                            .into(),
                    ))
                }
                "-r" | "--remap" => {
                    let rule = value(a)?;
                    let (from, to) = split_assignment(&rule, a)?;
                    // `node:__node:=x` applies to one node; this process has one node.
                    let from = from.rsplit(':').next().unwrap_or(from);
                    match from {
                        "__node" | "__name" => out.node_name = Some(to.to_owned()),
                        "__ns" => out.namespace = Some(to.to_owned()),
                        _ => out.remaps.push((from.to_owned(), to.to_owned())),
                    }
                }
                "-p" | "--param" => {
                    let rule = value(a)?;
                    let (name, v) = split_assignment(&rule, a)?;
                    let name = name.rsplit(':').next().unwrap_or(name);
                    // `name:=` is the empty string, as in rcl.
                    let parsed: serde_yaml_ng::Value = if v.is_empty() {
                        serde_yaml_ng::Value::String(String::new())
                    } else {
                        serde_yaml_ng::from_str(v).map_err(|e| {
                            ArgsError::Argument(format!("-p {name}:={v}: not a value ({e})"))
                        })?
                    };
                    let pv = to_param(&parsed)
                        .map_err(|m| ArgsError::Argument(format!("-p {name}:={v}: {m}")))?;
                    out.overrides.push((name.to_owned(), pv));
                }
                "--params-file" => out.params_files.push(PathBuf::from(value(a)?)),
                "--log-level" => out.log_level = Some(value(a)?),
                "-e" | "--enclave" => {
                    value(a)?;
                }
                "--disable-rosout-logs"
                | "--disable-stdout-logs"
                | "--enable-rosout-logs"
                | "--enable-stdout-logs"
                | "--disable-external-lib-logs" => {}
                other => {
                    return Err(ArgsError::Argument(format!(
                        "unknown argument `{other}` (expected -r, -p, --params-file, \
                         --log-level, --enclave)"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// The topic or service name `name` after the remap rules (first matching rule wins, as in
    /// rcl).
    pub fn remap<'a>(&'a self, name: &'a str) -> &'a str {
        self.remaps
            .iter()
            .find(|(from, _)| from == name)
            .map(|(_, to)| to.as_str())
            .unwrap_or(name)
    }

    /// Every parameter for the node `fq_name` (fully qualified, e.g. `/reflex` or `/arm1/reflex`):
    /// the files in order, then the `-p` overrides. Each value remembers its source.
    pub fn parameters(&self, fq_name: &str) -> Result<ParamSet, ArgsError> {
        let mut set = ParamSet::default();
        for path in &self.params_files {
            for (name, value) in read_params_file(path, fq_name)? {
                set.values.insert(name, (value, Source::File(path.clone())));
            }
        }
        for (name, value) in &self.overrides {
            set.values
                .insert(name.clone(), (value.clone(), Source::CommandLine));
        }
        Ok(set)
    }
}

/// Every parameter of one node, each with where it came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSet {
    /// By dotted name.
    pub values: BTreeMap<String, (ParamValue, Source)>,
}

fn split_assignment<'a>(rule: &'a str, flag: &str) -> Result<(&'a str, &'a str), ArgsError> {
    rule.split_once(":=")
        .filter(|(from, _)| !from.is_empty())
        .ok_or_else(|| ArgsError::Argument(format!("`{flag} {rule}`: expected `name:=value`")))
}

/// Reads the parameters in `path` that apply to the node `fq_name`.
pub fn read_params_file(
    path: &Path,
    fq_name: &str,
) -> Result<Vec<(String, ParamValue)>, ArgsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ArgsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file_err = |message: String| ArgsError::File {
        path: path.to_owned(),
        message,
    };
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| file_err(format!("not YAML: {e}")))?;
    let serde_yaml_ng::Value::Mapping(nodes) = doc else {
        return Err(file_err(
            "expected a map of node names, each with `ros__parameters:`".into(),
        ));
    };
    let mut out = Vec::new();
    for (key, body) in &nodes {
        let key = key
            .as_str()
            .ok_or_else(|| file_err(format!("node key {key:?} is not a string")))?;
        let params = body
            .as_mapping()
            .and_then(|m| m.get("ros__parameters"))
            .ok_or_else(|| file_err(format!("`{key}`: expected `{key}: ros__parameters:`")))?;
        if !node_key_matches(key, fq_name) {
            continue;
        }
        flatten(params, "", &mut out)
            .map_err(|m| file_err(format!("`{key}.ros__parameters`: {m}")))?;
    }
    Ok(out)
}

/// Whether a parameter file's node key applies to `fq_name` (rcl's rules: `/**` matches any
/// number of name tokens, `/*` one; a key without a leading slash is taken from the root).
pub fn node_key_matches(key: &str, fq_name: &str) -> bool {
    let key_tokens: Vec<&str> = key.split('/').filter(|t| !t.is_empty()).collect();
    let name_tokens: Vec<&str> = fq_name.split('/').filter(|t| !t.is_empty()).collect();
    fn matches(k: &[&str], n: &[&str]) -> bool {
        match (k.first(), n.first()) {
            (None, None) => true,
            (Some(&"**"), _) => (0..=n.len()).any(|skip| matches(&k[1..], &n[skip..])),
            (Some(&"*"), Some(_)) => matches(&k[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => matches(&k[1..], &n[1..]),
            _ => false,
        }
    }
    matches(&key_tokens, &name_tokens)
}

fn flatten(
    v: &serde_yaml_ng::Value,
    prefix: &str,
    out: &mut Vec<(String, ParamValue)>,
) -> Result<(), String> {
    match v {
        serde_yaml_ng::Value::Mapping(m) => {
            for (k, child) in m {
                let k = k
                    .as_str()
                    .ok_or_else(|| format!("key {k:?} under `{prefix}` is not a string"))?;
                let name = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(child, &name, out)?;
            }
            Ok(())
        }
        other => {
            let pv = to_param(other).map_err(|m| format!("`{prefix}`: {m}"))?;
            out.push((prefix.to_owned(), pv));
            Ok(())
        }
    }
}

fn to_param(v: &serde_yaml_ng::Value) -> Result<ParamValue, String> {
    use serde_yaml_ng::Value as V;
    Ok(match v {
        V::Bool(b) => ParamValue::Bool(*b),
        V::Number(n) if n.is_i64() => ParamValue::Integer(n.as_i64().unwrap_or_default()),
        V::Number(n) => ParamValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        V::String(s) => ParamValue::String(s.clone()),
        V::Sequence(items) => {
            if items.iter().all(|i| i.is_bool()) && !items.is_empty() {
                ParamValue::BoolArray(items.iter().filter_map(|i| i.as_bool()).collect())
            } else if items.iter().all(|i| i.is_i64()) && !items.is_empty() {
                ParamValue::IntegerArray(items.iter().filter_map(|i| i.as_i64()).collect())
            } else if items.iter().all(|i| i.is_number()) && !items.is_empty() {
                ParamValue::DoubleArray(items.iter().filter_map(|i| i.as_f64()).collect())
            } else if items.iter().all(|i| i.is_string()) {
                ParamValue::StringArray(
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect(),
                )
            } else {
                return Err("an array must hold one type (bools, numbers or strings)".into());
            }
        }
        V::Null => return Err("no value".into()),
        V::Mapping(_) => return Err("a map is not a parameter value".into()),
        V::Tagged(_) => return Err("tagged values are not parameters".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_files_arguments_parse() {
        let a = RosArgs::parse(&[
            "--ros-args",
            "-r",
            "__node:=arm_bridge",
            "-r",
            "__ns:=/cell1",
            "-r",
            "/joint_states:=/arm/joint_states",
            "-p",
            "servo_rate_hz:=250.0",
            "-p",
            "joint_names:=[a, b]",
            "--params-file",
            "/tmp/x.yaml",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(a.node_name.as_deref(), Some("arm_bridge"));
        assert_eq!(a.namespace.as_deref(), Some("/cell1"));
        assert_eq!(a.remap("/joint_states"), "/arm/joint_states");
        assert_eq!(a.remap("/tf"), "/tf");
        assert_eq!(
            a.overrides,
            vec![
                ("servo_rate_hz".into(), ParamValue::Double(250.0)),
                (
                    "joint_names".into(),
                    ParamValue::StringArray(vec!["a".into(), "b".into()])
                ),
            ]
        );
        assert_eq!(a.params_files, vec![PathBuf::from("/tmp/x.yaml")]);
    }

    #[test]
    fn bad_arguments_name_themselves() {
        let e = RosArgs::parse(&["--ros-args", "-p", "rate"]).unwrap_err();
        assert!(e.to_string().contains("`-p rate`"), "{e}");
        let e = RosArgs::parse(&["--ros-args", "--params-file"]).unwrap_err();
        assert!(e.to_string().contains("--params-file"), "{e}");
        let e = RosArgs::parse(&["--ros-args", "--frobnicate"]).unwrap_err();
        assert!(e.to_string().contains("--frobnicate"), "{e}");
    }

    #[test]
    fn node_keys_match_like_rcl() {
        assert!(node_key_matches("/**", "/reflex"));
        assert!(node_key_matches("/**", "/a/b/reflex"));
        assert!(node_key_matches("reflex", "/reflex"));
        assert!(node_key_matches("/reflex", "/reflex"));
        assert!(!node_key_matches("reflex", "/cell/reflex"));
        assert!(node_key_matches("/cell/reflex", "/cell/reflex"));
        assert!(node_key_matches("/*/reflex", "/cell/reflex"));
        assert!(node_key_matches("/**/reflex", "/cell/reflex"));
        assert!(!node_key_matches("/other", "/reflex"));
    }

    #[test]
    fn files_flatten_nested_maps_and_later_assignments_win() {
        let dir = std::env::temp_dir().join(format!("reflex-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.yaml");
        std::fs::write(
            &f,
            "/**:\n  ros__parameters:\n    servo_rate_hz: 100.0\n\
             reflex:\n  ros__parameters:\n    servo_rate_hz: 500.0\n    limits:\n      \
             joint_vel_max_rad_s: [1, 1.5]\n\
             other:\n  ros__parameters:\n    servo_rate_hz: 7.0\n",
        )
        .unwrap();
        let a = RosArgs::parse(&[
            "--params-file".to_string(),
            f.display().to_string(),
            "-p".into(),
            "task:=pick_cube".into(),
        ])
        .unwrap();
        let set = a.parameters("/reflex").unwrap();
        assert_eq!(set.values["servo_rate_hz"].0, ParamValue::Double(500.0));
        assert_eq!(
            set.values["limits.joint_vel_max_rad_s"].0,
            ParamValue::DoubleArray(vec![1.0, 1.5])
        );
        assert_eq!(set.values["task"].1, Source::CommandLine);
        std::fs::write(&f, "reflex:\n  servo_rate_hz: 1\n").unwrap();
        let e = a.parameters("/reflex").unwrap_err().to_string();
        assert!(e.contains("p.yaml") && e.contains("ros__parameters"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
