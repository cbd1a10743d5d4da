#!/usr/bin/env python3
"""Write the WIT a Charter plugin in Python, JavaScript or C builds against.

Language runtimes such as componentize-py and QuickJS import every function
of the world they are built for, and the host refuses a plugin with an
ungranted import. So a plugin names the host functions it calls, and this
script writes a world from the repository's `wit/` whose `charter:host`
interfaces hold exactly those functions (their types stay whole):

    python3 sdk/wit/guest-wit.py --uses log.write,kv.get,llm.classify --out build/wit

writes build/wit/world.wit (package `charter:guest`, world `step`: the
`charter:plugin/step@0.1.0` export plus the named imports) and
build/wit/deps/{charter-plugin,charter-host@VERSION}/. Build with world
`charter:guest/step`.

The host serves every released `wit/host@VERSION/` side by side, linking a
function at each version that has it. Each interface is imported from the
lowest version holding every function the plugin names of it: `kv.get`
stays at 0.1.0 and `notify.send` (new in 0.2.0) comes from 0.2.0, so a
plugin built before 0.2.0 builds to the same imports. (The host refuses
an import of a function at a version that never had it, such as notify at
0.1.0.) Standard library only; Python 3.8+.
"""
import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WIT = os.path.normpath(os.path.join(HERE, "..", "..", "wit"))
FUNC = re.compile(r"^\s*([a-z][a-z0-9-]*)\s*:\s*func\(")
IFACE = re.compile(r"^\s*interface\s+([a-z][a-z0-9-]*)\s*\{")
VERSION_DIR = re.compile(r"^host@([0-9]+)\.([0-9]+)\.([0-9]+)$")


def served(wit):
    """[(version, {iface: (file, text, [func, ...])})] for every wit/host@X.Y.Z/,
    oldest first."""
    out = []
    for d in os.listdir(wit):
        m = VERSION_DIR.match(d)
        if not m or not os.path.isdir(os.path.join(wit, d)):
            continue
        ifaces = {}
        for name in sorted(os.listdir(os.path.join(wit, d))):
            if name.endswith(".wit"):
                with open(os.path.join(wit, d, name)) as f:
                    text = f.read()
                im = next((IFACE.match(l) for l in text.splitlines() if IFACE.match(l)), None)
                if im is None:
                    sys.exit(f"guest-wit: {d}/{name} declares no interface")
                funcs = [FUNC.match(l).group(1) for l in text.splitlines() if FUNC.match(l)]
                ifaces[im.group(1)] = (name, text, funcs)
        out.append((tuple(int(x) for x in m.groups()), d.split("@", 1)[1], ifaces))
    if not out:
        sys.exit(f"guest-wit: no host@VERSION folder in {wit}")
    return [(v, i) for _, v, i in sorted(out)]


def pick_versions(versions, uses):
    """{iface: version}: for each interface the plugin uses, the lowest
    version whose interface holds every function it names; None if none does."""
    out = {}
    for iface, funcs in uses.items():
        out[iface] = next((v for v, ifaces in versions
                           if iface in ifaces and set(funcs) <= set(ifaces[iface][2])), None)
    return out


def trim(text, iface, keep):
    """Drop every function of `iface` not in `keep`, with its doc comment."""
    out, pending_doc = [], []
    for line in text.splitlines(keepends=True):
        if line.strip().startswith("///"):
            pending_doc.append(line)
            continue
        m = FUNC.match(line)
        if m and m.group(1) not in keep:
            pending_doc = []
            continue
        out.extend(pending_doc)
        pending_doc = []
        out.append(line)
    out.extend(pending_doc)
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uses", required=True,
                    help="comma-separated host functions, e.g. log.write,kv.get (empty: none)")
    ap.add_argument("--out", required=True, help="directory to write")
    ap.add_argument("--stdio", action="store_true",
                    help="also import wasi:cli/stdout and stderr (for runtimes whose print needs them)")
    ap.add_argument("--wit", default=DEFAULT_WIT, help="the repository's wit/ (default: %(default)s)")
    args = ap.parse_args()

    plugin_world = os.path.join(args.wit, "plugin@0.1.0", "world.wit")
    versions = served(args.wit)
    known = {}
    for v, ifaces in versions:
        for iface, (_, _, fs) in ifaces.items():
            for fn in fs:
                known.setdefault(f"{iface}.{fn}", v)

    uses = {}
    for item in filter(None, (s.strip() for s in args.uses.split(","))):
        if item not in known:
            sys.exit(f"guest-wit: unknown host function {item!r}; known: {', '.join(sorted(known))}")
        iface, _, func = item.partition(".")
        uses.setdefault(iface, set()).add(func)
    chosen = pick_versions(versions, uses)
    for iface, v in chosen.items():
        if v is None:
            sys.exit(f"guest-wit: no served version of {iface} has all of "
                     f"{', '.join(sorted(iface + '.' + f for f in uses[iface]))}")

    os.makedirs(os.path.join(args.out, "deps", "charter-plugin"), exist_ok=True)
    plugin_refs = set(re.findall(r"charter:host/[a-z-]+@([0-9.]+)", open(plugin_world).read()))
    for v, ifaces in versions:
        mine = {i for i, cv in chosen.items() if cv == v}
        # A version the plugin package's own worlds name is written even
        # when nothing is imported from it (a plugin calling only
        # knowledge.search, new in 0.3.0), so the package resolves.
        if not mine and v not in plugin_refs:
            continue
        d = os.path.join(args.out, "deps", f"charter-host@{v}")
        os.makedirs(d, exist_ok=True)
        # Every interface of the version is written (the package stays
        # whole); those the plugin does not import from here are emptied.
        for iface, (name, text, _) in ifaces.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(trim(text, iface, uses.get(iface, set()) if iface in mine else set()))
    with open(plugin_world) as src, open(os.path.join(args.out, "deps", "charter-plugin", "world.wit"), "w") as dst:
        dst.write(src.read())
    imports = "".join(f"    import charter:host/{i}@{chosen[i]};\n" for i in sorted(uses))
    if args.stdio:
        # The vendored WASI WIT the host implements (inert baseline: stdout
        # and stderr become the plugin's log lines).
        deps = os.path.join(args.wit, "deps")
        for name in sorted(os.listdir(deps)):
            if name.endswith(".wit"):
                with open(os.path.join(deps, name)) as src, open(os.path.join(args.out, "deps", name), "w") as dst:
                    dst.write(src.read())
        with open(os.path.join(deps, "cli.wit")) as f:
            version = re.search(r"package wasi:cli@([0-9.]+);", f.read()).group(1)
        imports += f"    import wasi:cli/stdout@{version};\n    import wasi:cli/stderr@{version};\n"
    with open(os.path.join(args.out, "world.wit"), "w") as f:
        f.write(
            "// Written by sdk/wit/guest-wit.py from the repository's wit/; do not edit.\n"
            "package charter:guest;\n\n"
            f"/// The step export plus the host functions this plugin calls: {', '.join(sorted(f'{i}.{fn}' for i, fs in uses.items() for fn in fs)) or 'none'}.\n"
            "world step {\n"
            "    include charter:plugin/step@0.1.0;\n"
            f"{imports}"
            "}\n"
        )


if __name__ == "__main__":
    main()
