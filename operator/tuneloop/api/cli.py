"""`tuneloop validate`: check Tuneloop manifests offline, for GitOps pipelines.

    tuneloop validate -f PATH [-f PATH ...] [--old PATH]

PATH is a file, a directory (walked recursively for *.yaml, *.yml, *.json) or `-` for stdin.
One line per problem, `FILE:DOC: spec.field.path: what is wrong and what is allowed`; other
kinds are skipped with a note, so it can run over a whole Argo CD application folder.
Exit 0 when every Tuneloop manifest is valid, 1 when any is invalid, 2 on unreadable input.
`--old` gives the manifests as they are in the cluster now, to check immutable fields.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO

import yaml

from tuneloop.api.validate import validate_manifest

EXTENSIONS = {".yaml", ".yml", ".json"}


class Unreadable(Exception):
    pass


def iter_files(target: str) -> Iterator[str]:
    if target == "-":
        yield "-"
        return
    path = Path(target)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in EXTENSIONS and p.is_file())
        yield from (str(p) for p in found)
    elif path.is_file():
        yield str(path)
    else:
        raise Unreadable(f"{target}: no such file or directory")


def load_documents(name: str, stdin: TextIO) -> list[Any]:
    try:
        text = stdin.read() if name == "-" else Path(name).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise Unreadable(f"{name}: cannot read: {err}") from err
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise Unreadable(f"{name}: not valid YAML{line}: {getattr(err, 'problem', err)}") from err


def _key(doc: Any) -> tuple | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return None
    meta = doc["metadata"]
    return (doc.get("kind"), meta.get("namespace"), meta.get("name"))


def main(argv: list[str] | None = None, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="tuneloop", description="Tuneloop command-line tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    val = sub.add_parser("validate", help="Check Tuneloop manifests against the CRDs and Tuneloop's rules, offline.")
    val.add_argument("-f", "--filename", action="append", required=True, metavar="PATH",
                     help="File, directory (recursive) or - for stdin; repeatable.")
    val.add_argument("--old", action="append", default=[], metavar="PATH",
                     help="Manifests as they are now (matched by kind/namespace/name), to check immutable fields.")
    val.add_argument("-q", "--quiet", action="store_true", help="Print problems only, no notes or summary.")
    sub.add_parser("demo", add_help=False, help="The whole maintenance loop on this machine (`tuneloop demo --help`).")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        # Its own parser, imported only here: `tuneloop validate` stays light (no kopf, boto3,
        # moto, rich, matplotlib). Dispatched before parsing: argparse's REMAINDER would not
        # pass on options such as --help.
        from tuneloop.demo.cli import main as demo

        return demo(argv[1:])
    args = parser.parse_args(argv)

    unreadable = False
    old_docs: dict[tuple, Any] = {}
    for target in args.old:
        try:
            for name in iter_files(target):
                for doc in load_documents(name, stdin):
                    old_docs[_key(doc)] = doc
        except Unreadable as err:
            print(f"error: {err}", file=out)
            unreadable = True

    checked = invalid = skipped = 0
    for target in args.filename:
        try:
            names = list(iter_files(target))
        except Unreadable as err:
            print(f"error: {err}", file=out)
            unreadable = True
            continue
        for name in names:
            try:
                docs = load_documents(name, stdin)
            except Unreadable as err:
                print(f"error: {err}", file=out)
                unreadable = True
                continue
            for index, doc in enumerate(docs, start=1):
                result = validate_manifest(doc, old_docs.get(_key(doc)))
                if result.kind is None:
                    skipped += 1
                    if not args.quiet:
                        print(f"{name}:{index}: {result.note}", file=out)
                    continue
                checked += 1
                invalid += bool(result.problems)
                for problem in result.problems:
                    print(f"{name}:{index}: {problem}", file=out)
    if not args.quiet:
        print(f"{checked} Tuneloop manifest(s) checked: {checked - invalid} valid, {invalid} invalid; {skipped} other document(s) skipped", file=out)
    if unreadable:
        return 2
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
