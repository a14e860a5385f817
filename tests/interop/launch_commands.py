"""The command lines a ROS 2 launch file would start, without the launch system.

The ROS 2 launch system (launch_ros) is not installable here, so the launch-file test reads
reflex_bringup's launch files as launch_ros would and prints, as JSON, every Reflex node's exact
command line: `<prefix>/lib/<pkg>/<exec> <arguments> --ros-args -r __node:=<name>
--params-file <file> ...`, with inline parameters written to a parameter file the way launch_ros
does (`/**: ros__parameters: {...}`). robot_state_publisher (another package) is listed by name
only.

- XML: `<arg>` defaults, `$(var)`, `$(find-pkg-share)`, `if=`, `unless=`, `<param from=>` and
  `<param name= value=>`.
- Python: the `Node(...)` and `DeclareLaunchArgument(...)` calls of generate_launch_description,
  read from the syntax tree (never executed): LaunchConfiguration, PathJoinSubstitution,
  FindPackageShare, IfCondition, UnlessCondition.

Usage: launch_commands.py FILE PREFIX OUTDIR [name:=value ...]
"""

import ast
import json
import os
import re
import shlex
import sys
import xml.etree.ElementTree as ET


def share(prefix, pkg):
    return os.path.join(prefix, "share", pkg)


def params_file(outdir, name, params, k):
    path = os.path.join(outdir, f"launch_params_{name}_{k}.yaml")
    with open(path, "w") as f:
        f.write("/**:\n  ros__parameters:\n")
        for key, value in params.items():
            f.write(f"    {key}: {json.dumps(value)}\n")
    return path


def truthy(v):
    v = v.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def node_command(prefix, pkg, exe, name, arguments, param_files, inline, outdir, k):
    cmd = [os.path.join(prefix, "lib", pkg, exe)] + arguments
    cmd += ["--ros-args", "-r", f"__node:={name}"]
    for f in param_files:
        cmd += ["--params-file", f]
    if inline:
        cmd += ["--params-file", params_file(outdir, name, inline, k)]
    return cmd


def from_xml(path, prefix, outdir, overrides):
    root = ET.parse(path).getroot()
    args = {}

    def subst(text):
        def one(m):
            kind, _, rest = m.group(1).partition(" ")
            if kind == "var":
                return args[rest.strip()]
            if kind == "find-pkg-share":
                return share(prefix, rest.strip())
            raise ValueError(f"substitution $({m.group(1)}) is not supported here")

        prev = None
        while prev != text:
            prev, text = text, re.sub(r"\$\(((?:var|find-pkg-share) [^()]*)\)", one, text)
        return text

    nodes = []
    for k, el in enumerate(root):
        if el.tag == "arg":
            args[el.get("name")] = overrides.get(el.get("name"), subst(el.get("default", "")))
        elif el.tag == "node":
            if el.get("if") is not None and not truthy(subst(el.get("if"))):
                continue
            if el.get("unless") is not None and truthy(subst(el.get("unless"))):
                continue
            pkg, exe, name = el.get("pkg"), el.get("exec"), el.get("name")
            if pkg != "reflex_bringup":
                nodes.append({"package": pkg, "name": name})
                continue
            files, inline = [], {}
            for p in el.findall("param"):
                if p.get("from"):
                    files.append(subst(p.get("from")))
                else:
                    inline[p.get("name")] = subst(p.get("value"))
            cmd = node_command(prefix, pkg, exe, name, shlex.split(subst(el.get("args", ""))),
                               files, inline, outdir, k)
            nodes.append({"package": pkg, "name": name, "cmd": cmd})
    return nodes


def from_python(path, prefix, outdir, overrides):
    tree = ast.parse(open(path).read(), path)
    func = next(n for n in ast.walk(tree)
                if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description")
    env = {}  # local name -> launch argument name, or a package share
    for st in func.body:
        if isinstance(st, ast.Assign) and isinstance(st.value, ast.Call):
            callee = st.value.func.id
            arg0 = st.value.args[0].value
            for t in st.targets:
                env[t.id] = ("config", arg0) if callee == "LaunchConfiguration" else ("share", arg0)
    calls = [n for n in ast.walk(func) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    args = {}

    def value(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            kind, what = env[node.id]
            return args[what] if kind == "config" else share(prefix, what)
        if isinstance(node, ast.Call) and node.func.id == "PathJoinSubstitution":
            return os.path.join(*[value(e) for e in node.args[0].elts])
        if isinstance(node, ast.Call) and node.func.id == "FindPackageShare":
            return share(prefix, node.args[0].value)
        raise ValueError(f"{path}:{node.lineno}: cannot evaluate {ast.dump(node)[:80]}")

    for c in calls:
        if c.func.id == "DeclareLaunchArgument":
            kw = {k.arg: k.value for k in c.keywords}
            name = c.args[0].value
            args[name] = overrides.get(name, value(kw["default_value"]))
    nodes = []
    for k, c in enumerate(x for x in calls if x.func.id == "Node"):
        kw = {k_.arg: k_.value for k_ in c.keywords}
        pkg, exe, name = value(kw["package"]), value(kw["executable"]), value(kw["name"])
        cond = kw.get("condition")
        if cond is not None:
            holds = truthy(value(cond.args[0]))
            if cond.func.id == "UnlessCondition":
                holds = not holds
            elif cond.func.id != "IfCondition":
                raise ValueError(f"{path}:{cond.lineno}: condition {cond.func.id} is not supported here")
            if not holds:
                continue
        if pkg != "reflex_bringup":
            nodes.append({"package": pkg, "name": name})
            continue
        arguments = [str(value(a)) for a in kw["arguments"].elts] if "arguments" in kw else []
        files, inline = [], {}
        for p in kw["parameters"].elts if "parameters" in kw else []:
            if isinstance(p, ast.Dict):
                for key, v in zip(p.keys, p.values):
                    inline[key.value] = value(v)
            else:
                files.append(value(p))
        nodes.append({"package": pkg, "name": name,
                      "cmd": node_command(prefix, pkg, exe, name, arguments, files, inline, outdir, k)})
    return nodes


def main():
    path, prefix, outdir = sys.argv[1:4]
    overrides = dict(a.split(":=", 1) for a in sys.argv[4:])
    nodes = (from_xml if path.endswith(".xml") else from_python)(path, prefix, outdir, overrides)
    print(json.dumps(nodes))


if __name__ == "__main__":
    main()
