#!/usr/bin/env python3
"""Check a Python, JavaScript or C plugin against its `host-functions` file.

    python3 sdk/check-uses.py python|js DIR
    python3 sdk/check-uses.py c DIR --core CORE.wasm
    python3 sdk/check-uses.py --list DIR      # print the file's functions, comma-separated

`DIR/host-functions` names the host functions the plugin calls: names such as
`log.write kv.get llm.classify`, separated by spaces, commas or newlines; `#`
starts a comment. The plugin's component imports exactly those (its language
runtime imports every function of the world it is built for), so a
deployment must grant exactly those.

A call the file does not list would fail the build with an error that does
not name it (componentize-py: a long backtrace; QuickJS: "module not found";
C: "module requires an import interface"), so `sdk/build.sh` runs this first
and it prints one line naming the function, where it is called, and the file
to add it to. Python is read with `ast` (`from wit_world.imports import kv`
then `kv.get(...)`), JavaScript by its imports (`import kv from
"charter:host/kv@0.1.0"` then `kv.get(...)`), C exactly, from the compiled
core module's imports. A listed function the source never calls is only a
note: the component will import it, and a deployment will have to grant it.

Every served `wit/host@X.Y.Z/` is known: each interface is imported from
the lowest version holding every function listed of it (as
sdk/wit/guest-wit.py builds the world), so `notify.send` is at 0.2.0 and
`kv.get` at 0.1.0. A JavaScript import or a C declaration of an interface
at another version (notify at 0.1.0, which never had it) is one line naming
the version to import.

Exit codes: 0 consistent, 1 a missing or unknown function. Standard library
only; Python 3.8+.
"""
import argparse
import ast
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WIT = os.path.normpath(os.path.join(HERE, "..", "wit"))
FUNC = re.compile(r"^\s*([a-z][a-z0-9-]*)\s*:\s*func\(")
IFACE = re.compile(r"^\s*interface\s+([a-z][a-z0-9-]*)\s*\{")
VERSION_DIR = re.compile(r"^host@([0-9]+)\.([0-9]+)\.([0-9]+)$")


def served_versions():
    """[(version, {interface: [function, ...]})] for every wit/host@X.Y.Z/
    the host serves, oldest first."""
    out = []
    for d in os.listdir(WIT):
        m = VERSION_DIR.match(d)
        if not m or not os.path.isdir(os.path.join(WIT, d)):
            continue
        ifaces = {}
        for name in sorted(os.listdir(os.path.join(WIT, d))):
            if not name.endswith(".wit"):
                continue
            with open(os.path.join(WIT, d, name)) as f:
                lines = f.read().splitlines()
            iface = next((m.group(1) for m in map(IFACE.match, lines) if m), None)
            if iface:
                ifaces[iface] = [m.group(1) for m in map(FUNC.match, lines) if m]
        out.append((tuple(int(x) for x in m.groups()), d.split("@", 1)[1], ifaces))
    return [(v, i) for _, v, i in sorted(out)]


def known_functions(versions=None):
    """{interface: [function, ...]} over every served host version."""
    out = {}
    for _, ifaces in versions if versions is not None else served_versions():
        for iface, funcs in ifaces.items():
            have = out.setdefault(iface, [])
            have += [f for f in funcs if f not in have]
    return out


def world_versions(versions, names):
    """{interface: version} the build imports (as sdk/wit/guest-wit.py does):
    for each interface, the lowest version holding every listed function of it."""
    wanted = {}
    for n in names:
        iface, _, func = n.partition(".")
        wanted.setdefault(iface, set()).add(func)
    return {iface: next((v for v, ifaces in versions if iface in ifaces
                         and funcs <= set(ifaces[iface])), None)
            for iface, funcs in wanted.items()}


def read_listed(path):
    """The functions `host-functions` lists, in order: [(name, line)]."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            for item in re.split(r"[\s,]+", line.split("#", 1)[0]):
                if item:
                    out.append((item, n))
    return out


def kebab(name):
    """A binding's name for a WIT function back to its WIT name:
    `list_keys` (Python), `listKeys` (JavaScript) -> `list-keys`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).replace("_", "-").lower()


# The Python SDK's helpers (sdk/python/charter.py) and the host function
# each calls.
PY_HELPERS = {"knowledge_search": "knowledge.search"}


def python_calls(path, ifaces):
    """[(iface.func, line)] the Python file calls through wit_world.imports
    (or through a charter.py helper)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    modules, direct, sdk = {}, {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            sdk |= {a.asname or a.name for a in node.names if a.name == "charter"}
        elif isinstance(node, ast.ImportFrom) and node.module == "charter":
            for a in node.names:
                if a.name in PY_HELPERS:
                    direct[a.asname or a.name] = PY_HELPERS[a.name]
        if isinstance(node, ast.ImportFrom) and node.module == "wit_world.imports":
            for a in node.names:
                if a.name in ifaces:
                    modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wit_world.imports."):
            iface = node.module.rsplit(".", 1)[1]
            for a in node.names:
                direct[a.asname or a.name] = f"{iface}.{kebab(a.name)}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("wit_world.imports."):
                    modules[a.asname or a.name] = a.name.rsplit(".", 1)[1]
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute):
            base = f.value
            dotted = base.id if isinstance(base, ast.Name) else (
                f"{base.value.id}.{base.attr}" if isinstance(base, ast.Attribute)
                and isinstance(base.value, ast.Name) else None)
            if dotted in modules and f.attr[:1].islower():
                calls.append((f"{modules[dotted]}.{kebab(f.attr)}", node.lineno))
            elif dotted in sdk and f.attr in PY_HELPERS:
                calls.append((PY_HELPERS[f.attr], node.lineno))
        elif isinstance(f, ast.Name) and f.id in direct:
            calls.append((direct[f.id], node.lineno))
    return calls, sorted(set(modules.values()))


JS_DEFAULT = re.compile(r"""import\s+(?:\*\s+as\s+)?([A-Za-z_$][\w$]*)\s+from\s+["']charter:host/([a-z-]+)@([0-9.]+)["']""")
JS_NAMED = re.compile(r"""import\s*\{([^}]*)\}\s*from\s+["']charter:host/([a-z-]+)@([0-9.]+)["']""")
JS_ANY = re.compile(r"""["']charter:host/([a-z-]+)@([0-9A-Za-z.+-]*)["']""")


def js_versions(path):
    """[(interface, version, line)] of every `charter:host/IFACE@VERSION` the file names."""
    with open(path) as f:
        text = f.read()
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in JS_ANY.finditer(text)]


def js_calls(path, ifaces):
    """[(iface.func, line)] the JavaScript file calls through charter:host imports."""
    with open(path) as f:
        text = f.read()
    line_of = lambda pos: text.count("\n", 0, pos) + 1
    modules, calls = {}, []
    for m in JS_DEFAULT.finditer(text):
        modules[m.group(1)] = m.group(2)
    for m in JS_NAMED.finditer(text):
        for part in filter(None, (p.strip() for p in m.group(1).split(","))):
            name, _, alias = part.partition(" as ")
            local = (alias or name).strip()
            for c in re.finditer(r"(?<![\w$.])" + re.escape(local) + r"\s*\(", text):
                calls.append((f"{m.group(2)}.{kebab(name.strip())}", line_of(c.start())))
    for local, iface in modules.items():
        for c in re.finditer(r"(?<![\w$.])" + re.escape(local) + r"\.([A-Za-z_$][\w$]*)\s*\(", text):
            calls.append((f"{iface}.{kebab(c.group(1))}", line_of(c.start())))
    return calls, sorted(set(modules.values()) | {m.group(2) for m in JS_NAMED.finditer(text)})


def leb(data, pos):
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, pos


def core_imports(path):
    """[(module, name)] a core wasm module imports."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\0asm":
        sys.exit(f"check-uses: {path} is not a core wasm module")
    pos, out = 8, []
    while pos < len(data):
        sid, size = data[pos], None
        size, pos = leb(data, pos + 1)
        end = pos + size
        if sid == 2:
            count, pos = leb(data, pos)
            for _ in range(count):
                names = []
                for _ in range(2):
                    n, pos = leb(data, pos)
                    names.append(data[pos:pos + n].decode())
                    pos += n
                kind = data[pos]
                pos += 1
                if kind == 0:      # func: type index
                    _, pos = leb(data, pos)
                elif kind == 1:    # table: reftype + limits
                    pos += 1
                    flags, pos = leb(data, pos + 0)
                    _, pos = leb(data, pos)
                    if flags & 1:
                        _, pos = leb(data, pos)
                elif kind == 2:    # memory: limits
                    flags, pos = leb(data, pos)
                    _, pos = leb(data, pos)
                    if flags & 1:
                        _, pos = leb(data, pos)
                elif kind == 3:    # global: valtype + mut
                    pos += 2
                else:
                    break
                out.append(tuple(names))
            return out
        pos = end
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lang", nargs="?", choices=["python", "js", "c"])
    ap.add_argument("dir")
    ap.add_argument("--core", help="C: the compiled core module, whose imports are the calls")
    ap.add_argument("--list", action="store_true", help="print the listed functions, comma-separated, and exit")
    args = ap.parse_args()

    hf = os.path.join(os.path.abspath(args.dir), "host-functions")
    if not os.path.isfile(hf):
        sys.exit(f"sdk/build.sh: {hf} is missing: create it listing the host functions the plugin calls "
                 "(e.g. `log.write kv.get`; empty if none)")
    versions = served_versions()
    ifaces = known_functions(versions)
    known = {f"{i}.{f}" for i, fs in ifaces.items() for f in fs}
    listed = read_listed(hf)
    bad = [(n, line) for n, line in listed if n not in known]
    if bad:
        import difflib
        name, line = bad[0]
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        sys.exit(f"sdk/build.sh: {hf}:{line}: {name!r} is not a host function; {hint}"
                 f"known: {' '.join(sorted(known))}")
    names = [n for n, _ in listed]
    if args.list:
        print(",".join(dict.fromkeys(names)))
        return
    if not args.lang:
        ap.error("LANG is required unless --list")

    world = world_versions(versions, names)

    def wrong_version(iface, version, where):
        """One line for an import at another version than the build's world."""
        if iface not in world or version == world[iface]:
            return
        has = [v for v, i in versions if iface in i]
        why = (f"charter:host@{version} has no {iface} (it is served from {has[0]} on)"
               if has and version not in [v for v, i in versions if iface in i]
               else f"this build imports {iface} from {world[iface]} (the lowest version with "
                    f"{' '.join(n for n in dict.fromkeys(names) if n.startswith(iface + '.'))})")
        sys.exit(f"sdk/build.sh: {where} imports charter:host/{iface}@{version}, but {why}: "
                 f"import charter:host/{iface}@{world[iface]}")

    calls, imported = [], []
    if args.lang == "c":
        if not args.core:
            ap.error("c needs --core CORE.wasm")
        for module, name in core_imports(args.core):
            m = re.fullmatch(r"charter:host/([a-z-]+)@([0-9.]+)", module)
            if m:
                calls.append((f"{m.group(1)}.{name}", None, "step.c"))
                wrong_version(m.group(1), m.group(2), "step.c")
    else:
        ext, scan = (".py", python_calls) if args.lang == "python" else (".js", js_calls)
        for root, dirs, files in os.walk(args.dir):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__", "node_modules")) and not d.endswith(".wasm.d")]
            for fname in sorted(files):
                if fname.endswith(ext) and fname != "charter.js":
                    path = os.path.join(root, fname)
                    rel = os.path.relpath(path, args.dir)
                    try:
                        found, mods = scan(path, ifaces)
                    except SyntaxError as e:
                        sys.exit(f"sdk/build.sh: {rel}:{e.lineno}: syntax error: {e.msg}")
                    calls += [(c, line, rel) for c, line in found]
                    if args.lang == "js":
                        for iface, version, line in js_versions(path):
                            wrong_version(iface, version, f"{rel}:{line}")
                    imported += [(i, rel) for i in mods]

    missing = {}
    for call, line, rel in calls:
        if call not in known:
            where = f"{rel}:{line}" if line else rel
            sys.exit(f"sdk/build.sh: {where} calls {call}, which is not a host function; "
                     f"known: {' '.join(sorted(known))}")
        if call not in names:
            missing.setdefault(call, f"{rel}:{line}" if line else rel)
    for iface, rel in imported:
        if iface in ifaces and not any(n.startswith(iface + ".") for n in names) \
                and not any(c.startswith(iface + ".") for c in missing):
            missing.setdefault(f"{iface}.*", rel)
    if missing:
        parts = [f"{c} ({w})" if not c.endswith("*") else f"{c[:-2]} (imported in {w}, no function of it listed)"
                 for c, w in missing.items()]
        add = " ".join(c for c in missing if not c.endswith("*")) or "the functions it calls"
        print(f"sdk/build.sh: the plugin calls {', '.join(parts)}, which {hf} does not list: "
              f"add `{add}` to it (and grant it in charter.toml)", file=sys.stderr)
        sys.exit(1)
    called = {c for c, _, _ in calls}
    unused = [n for n in dict.fromkeys(names) if n not in called]
    if unused and args.lang != "c":
        print(f"note: {hf} lists {' '.join(unused)}, which the source does not seem to call; "
              "the component imports it all the same, and a deployment must grant it", file=sys.stderr)
    elif unused:
        print(f"note: {hf} lists {' '.join(unused)}, which step.c does not call; it is left out", file=sys.stderr)


if __name__ == "__main__":
    main()
