#!/usr/bin/env python3
"""Import circles between the modules of each crate in the workspace.

For every reference from module M to module P of the same crate (`use crate::...`,
`crate::a::b` in paths, `super::...`), the edge is drawn between the two children of
their lowest common ancestor that contain M and P. A cycle among siblings at any level
is an import circle: e.g. `train` using `commands` while `commands` uses `train`.
Prints the cycles and exits 1 when there is one; exits 0 otherwise.

Usage: python3 scripts/module-cycles.py [crate_src_dir ...]
(default: the `src` folder of every workspace member)
"""
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_files(src: Path):
    """Map module path (tuple) -> file for one crate's src dir."""
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src)
        parts = list(rel.with_suffix("").parts)
        if parts[0] == "bin":
            continue
        if parts[-1] in ("lib", "main") and len(parts) == 1:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        mods[tuple(parts)] = f
    return mods


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def expand_use(tree: str):
    """Expand `a::{b, c::{d, e}}` into ['a::b', 'a::c::d', 'a::c::e']."""
    tree = tree.strip()
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, inner = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p.strip():
            out.extend(prefix + e for e in expand_use(p))
    return out


def references(text: str):
    text = strip_comments(text)
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", text, flags=re.S):
        paths.extend(expand_use(re.sub(r"\s+", "", m.group(1))))
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        paths.append(m.group(1))
    return paths


def resolve(path: str, here: tuple, is_dir_mod: bool, mods):
    segs = [s for s in path.split("::") if s]
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    else:
        # `self`/`super` are relative to the module itself (a mod.rs file is the folder).
        base = list(here)
        while segs and segs[0] in ("self", "super"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    target = tuple(base)
    for s in segs:
        s = s.split(" as ")[0]
        if target + (s,) in mods:
            target = target + (s,)
        else:
            break
    return target


def find_cycles(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            strong(v)
    return out


def crate_cycles(src: Path):
    mods = module_files(src)
    edges = {}
    for here, f in mods.items():
        for p in references(f.read_text()):
            there = resolve(p, here, f.name == "mod.rs", mods)
            k = 0
            while k < min(len(here), len(there)) and here[k] == there[k]:
                k += 1
            if k == len(here) or k == len(there):
                continue  # a module and its own ancestor or descendant
            parent, a, b = here[:k], here[k], there[k]
            edges.setdefault(parent, {}).setdefault(a, set()).add(b)
    found = []
    for parent, graph in sorted(edges.items()):
        for comp in find_cycles(graph):
            found.append(("::".join(("crate",) + parent), comp, graph))
    return found


def workspace_srcs():
    out = []
    for d in ["crates/" + c for c in sorted(os.listdir(ROOT / "crates"))] + ["xtask"]:
        if (ROOT / d / "src").is_dir():
            out.append(ROOT / d / "src")
    return out


def main():
    srcs = [Path(a) for a in sys.argv[1:]] or workspace_srcs()
    bad = 0
    for src in srcs:
        for parent, comp, graph in crate_cycles(src):
            bad += 1
            links = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
            print(f"{src}: circle among the children of {parent}: {', '.join(links)}")
    if bad:
        sys.exit(1)
    print(f"no import circles in {len(srcs)} crates")


if __name__ == "__main__":
    main()
