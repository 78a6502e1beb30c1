#!/usr/bin/env python3
"""Fails when a source file of a crate imports, directly or through other
files, a file that imports it back.

What it checks: in every crate of the repository (each `src/lib.rs`,
`src/main.rs` and `src/bin/*.rs` and the module files they declare with
`mod x;`), a file A depends on a file B when A names an item of B's module
through a path that starts with `crate::`, `super::` or `self::` (in a `use`
or anywhere in the code). The crate root's own `mod x;` and `pub use x::…`
of its children are declarations, not imports, and are no edge: children may
use what their root re-exports.

Methods count too: when file B holds an inherent `impl T` block for a type T
defined in file A, and A calls one of that block's methods, A depends on B,
unless B is a child module of A (a declared part of A, which sees A's private
items: the way to split a type's methods over files). So a type whose methods
live in a file that also imports the type's own file is a cycle, as the
imports alone would not show.

Every strongly connected group of two or more files is reported with the
lines that make its edges; the exit status is 1 if there is any.

Usage: scripts/check-import-cycles.py [repository root]
"""

import re
import sys
from pathlib import Path

ROOT_NAMES = ("lib.rs", "main.rs", "mod.rs")


def strip(text):
    """The code without comments, string and char literals (same line numbers)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"\w", text[i - 1 : i] or " "):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Crate:
    def __init__(self, root_file):
        self.root = root_file
        self.modules = {}  # module path (tuple) -> file
        self.children = {}  # module path -> set of child names
        self.code = {}  # file -> stripped text
        self._load(root_file, ())

    def _load(self, file, path):
        text = strip(file.read_text(encoding="utf-8"))
        self.code[file] = text
        self._declare(file, path, text)

    def _declare(self, file, path, text):
        """Registers `path` as the module of `file` and walks its `mod` items."""
        self.modules[path] = file
        self.children.setdefault(path, set())
        for inline_path, name, has_body in self._mod_items(text, path):
            child = inline_path + (name,)
            self.children.setdefault(inline_path, set()).add(name)
            if has_body:
                self.modules[child] = file
                self.children.setdefault(child, set())
                continue
            child_file = self._module_file(file, inline_path[len(path) :], name)
            if child_file is not None:
                self._load(child_file, child)

    @staticmethod
    def _mod_items(text, path):
        """(enclosing module path, name, inline?) for every `mod` item, with
        the inline modules it sits in."""
        stack = []  # (depth at which the inline module's body opened, path)
        depth = 0
        for m in re.finditer(r"\bmod\s+(r#)?(\w+)\s*([;{])|[{}]", text):
            tok = m.group(0)
            if tok == "{":
                depth += 1
                continue
            if tok == "}":
                depth -= 1
                while stack and stack[-1][0] > depth:
                    stack.pop()
                continue
            current = stack[-1][1] if stack else path
            name, end = m.group(2), m.group(3)
            yield current, name, end == "{"
            if end == "{":
                depth += 1
                stack.append((depth, current + (name,)))

    @staticmethod
    def _module_file(file, inline, name):
        base = file.parent if file.name in ROOT_NAMES else file.parent / file.stem
        base = base.joinpath(*inline)
        for candidate in (base / f"{name}.rs", base / name / "mod.rs"):
            if candidate.exists():
                return candidate
        return None

    def module_at(self, file, offset):
        """The module path of the code at `offset` of `file`: the file's own
        module, or the innermost inline module open there."""
        own = min((p for p, f in self.modules.items() if f == file), key=len)
        stack = []
        depth = 0
        for m in re.finditer(r"\bmod\s+(r#)?(\w+)\s*\{|[{}]", self.code[file][:offset]):
            tok = m.group(0)
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                while stack and stack[-1][0] > depth:
                    stack.pop()
            else:
                depth += 1
                stack.append((depth, (stack[-1][1] if stack else own) + (m.group(2),)))
        return stack[-1][1] if stack else own

    def resolve(self, here, segments):
        """The file of the module a path names, or None outside the crate."""
        first = segments[0]
        if first == "crate":
            path, rest = (), segments[1:]
        elif first in ("super", "self"):
            path, rest = here, segments
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if not path:
                        return None
                    path = path[:-1]
                rest = rest[1:]
        else:
            return None
        for name in rest:
            if name in self.children.get(path, ()):
                path = path + (name,)
            else:
                break
        return self.modules.get(path)


USE = re.compile(r"\buse\s+((?:crate|super|self)\b[^;]*);")
PATH = re.compile(r"(?<![\w:])\$?((?:crate|super|self)(?:\s*::\s*\w+)+)")
VISIBILITY = re.compile(r"\bpub\s*\(\s*in\s+[^)]*\)|\bpub\s*\(\s*(?:crate|super|self)\s*\)")


def use_paths(tree):
    """Expands a use tree (`crate::{a::b, c::{d, e as f}}`) into its paths."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def walk(prefix, text):
        if "{" not in text:
            paths.append(prefix + [s for s in text.split("::") if s and s != "*"])
            return
        head, body = text.split("{", 1)
        body = body[: body.rfind("}")]
        prefix = prefix + [s for s in head.split("::") if s]
        depth, start = 0, 0
        for i, c in enumerate(body + ","):
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == "," and depth == 0:
                if body[start:i]:
                    walk(prefix, body[start:i])
                start = i + 1

    walk([], tree)
    return [p for p in paths if p]


def edges(crate):
    """(from file, to file, line number, path text) for every import."""
    found = []
    for file, text in crate.code.items():
        text = VISIBILITY.sub(lambda m: " " * len(m.group(0)), text)
        spans = []
        for m in USE.finditer(text):
            spans.append((m.start(), m.end()))
            here = crate.module_at(file, m.start())
            line = text.count("\n", 0, m.start()) + 1
            for segments in use_paths(m.group(1)):
                if segments[-1] == "self":
                    segments = segments[:-1]
                target = crate.resolve(here, segments)
                if target is not None and target != file:
                    found.append((file, target, line, "::".join(segments)))
        for m in PATH.finditer(text):
            if any(a <= m.start() < b for a, b in spans):
                continue
            segments = re.split(r"\s*::\s*", m.group(1))
            here = crate.module_at(file, m.start())
            target = crate.resolve(here, segments)
            if target is not None and target != file:
                line = text.count("\n", 0, m.start()) + 1
                found.append((file, target, line, "::".join(segments)))
    return found


TYPE_DEF = re.compile(r"\b(?:struct|enum|union|trait)\s+(\w+)")
INHERENT_IMPL = re.compile(r"\bimpl\s*(?:<[^{;]*?>)?\s*(\w+)\s*(?:<[^{;]*?>)?\s*\{")


def block_end(text, open_brace):
    """The offset just past the `}` matching the `{` at `open_brace`."""
    depth = 0
    for i in range(open_brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def method_edges(crate):
    """(from file, to file, line number, what) for every call, in the file that
    defines a type, of a method of an inherent impl of it in another file
    that is not a child module of the defining one."""
    defined = {}
    for file, text in crate.code.items():
        for m in TYPE_DEF.finditer(text):
            defined.setdefault(m.group(1), set()).add(file)
    file_module = {}
    for path, file in crate.modules.items():
        if file not in file_module or len(path) < len(file_module[file]):
            file_module[file] = path
    found = []
    for impl_file, text in crate.code.items():
        for m in INHERENT_IMPL.finditer(text):
            owners = defined.get(m.group(1), set())
            if len(owners) != 1:
                continue  # unknown here, or ambiguous
            type_file = next(iter(owners))
            if type_file == impl_file:
                continue
            parent, child = file_module[type_file], file_module[impl_file]
            if child[: len(parent)] == parent and len(child) > len(parent):
                continue  # a child module: a declared part of the type's file
            body = text[m.end() - 1 : block_end(text, m.end() - 1)]
            methods = set(re.findall(r"\bfn\s+(\w+)", body))
            caller = crate.code[type_file]
            for name in sorted(methods):
                call = re.search(r"(?:\.|::)\s*" + name + r"\s*(?:::<[^>]*>)?\s*\(", caller)
                if call:
                    line = caller.count("\n", 0, call.start()) + 1
                    found.append((type_file, impl_file, line, f"{name}() of impl {m.group(1)}"))
    return found


def cycles(graph):
    """The strongly connected groups of two or more nodes (Tarjan)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def crate_roots(repo):
    for manifest in sorted(repo.rglob("Cargo.toml")):
        if any(part in ("target", ".git") or part.startswith(".") for part in manifest.relative_to(repo).parts[:-1]):
            continue
        src = manifest.parent / "src"
        for root in [src / "lib.rs", src / "main.rs", *sorted((src / "bin").glob("*.rs"))]:
            if root.exists():
                yield root


def main():
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    sys.setrecursionlimit(10000)
    failed = 0
    files = 0
    for root in crate_roots(repo):
        crate = Crate(root)
        files += len(crate.code)
        found = edges(crate) + method_edges(crate)
        graph = {}
        for a, b, _, _ in found:
            graph.setdefault(a, set()).add(b)
        for group in cycles(graph):
            failed += 1
            members = set(group)
            names = ", ".join(str(f.relative_to(repo)) for f in group)
            print(f"import cycle in {root.relative_to(repo)}: {names}")
            seen = set()
            for a, b, line, path in found:
                if a in members and b in members and (a, line, path) not in seen:
                    seen.add((a, line, path))
                    print(f"  {a.relative_to(repo)}:{line}: {path} -> {b.relative_to(repo)}")
    if failed:
        print(f"{failed} import cycle(s) between files")
        return 1
    print(f"no import cycles between files ({files} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
