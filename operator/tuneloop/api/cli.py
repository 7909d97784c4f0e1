"""`tuneloop validate`: check Tuneloop manifests offline, for GitOps pipelines.

    tuneloop validate -f PATH [-f PATH ...] [--old PATH]

PATH is a file, a directory (walked recursively for *.yaml, *.yml, *.json) or `-` for stdin.
One line per problem, `FILE:DOC: spec.field.path: what is wrong and what is allowed`; other
kinds are skipped with a note, so it can run over a whole Argo CD application folder.
Exit 0 when every Tuneloop manifest is valid, 1 when any is invalid, 2 on unreadable input.
`--old` gives the manifests as they are in the cluster now, to check immutable fields.

Hostile or odd input never ends in a traceback (issue 13): every document is first turned
into plain, bounded JSON (`tuneloop.api.documents`), each is checked on its own, and a bug
met while checking one is reported on that document's line and the rest are still checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO

from tuneloop.api import crds
from tuneloop.api.documents import MAX_BYTES, Document, InputError, load_yaml_documents
from tuneloop.api.typed import Problem
from tuneloop.api.validate import Result, validate_manifest

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


def read_text(name: str, stdin: TextIO) -> str:
    """The file's text, at most MAX_BYTES (read one byte more to tell)."""
    try:
        if name == "-":
            text = stdin.read(MAX_BYTES + 1)
        else:
            with open(name, encoding="utf-8") as f:
                text = f.read(MAX_BYTES + 1)
    except (OSError, UnicodeDecodeError) as err:
        raise Unreadable(f"{name}: cannot read: {err}") from err
    if len(text) > MAX_BYTES:
        raise Unreadable(f"{name}: larger than {MAX_BYTES} bytes, which the Kubernetes API server refuses; split it")
    return text


def load_documents(name: str, stdin: TextIO) -> list[Document]:
    try:
        return load_yaml_documents(read_text(name, stdin))
    except InputError as err:
        raise Unreadable(f"{name}: {err}") from err


def _key(doc: Any) -> tuple | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return None
    meta = doc["metadata"]
    key = (doc.get("kind"), meta.get("namespace"), meta.get("name"))
    return key if all(part is None or isinstance(part, str) for part in key) else None


def is_tuneloop(raw: Any) -> bool:
    api_version = raw.get("apiVersion") if isinstance(raw, dict) else None
    return isinstance(api_version, str) and api_version.startswith(crds.GROUP + "/")


def check_document(doc: Document, old: Any) -> Result:
    """The document's result; never raises (an unexpected error is a problem on its line)."""
    if doc.error is not None:
        if not is_tuneloop(doc.raw):
            return Result(kind=None, note=f"skipped: not plain JSON ({doc.error}), and not a Tuneloop kind")
        return Result(kind="?", problems=[Problem(doc.error.where or "document", doc.error.message)])
    try:
        return validate_manifest(doc.value, old)
    except Exception as err:  # noqa: BLE001 - one bad document must not stop the others
        return Result(kind="?", problems=[Problem("document", f"could not be checked ({type(err).__name__}: {err}); "
                                                              "please report this as a Tuneloop bug")])


def emit(out: TextIO, line: str) -> None:
    """Print one line whatever the terminal's encoding (a user's key may hold anything)."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    print(line.encode(encoding, "backslashreplace").decode(encoding), file=out)


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
                    if doc.error is None and (key := _key(doc.value)) is not None:
                        old_docs[key] = doc.value
        except Unreadable as err:
            emit(out, f"error: {err}")
            unreadable = True

    checked = invalid = skipped = 0
    for target in args.filename:
        try:
            names = list(iter_files(target))
        except Unreadable as err:
            emit(out, f"error: {err}")
            unreadable = True
            continue
        for name in names:
            try:
                docs = load_documents(name, stdin)
            except Unreadable as err:
                emit(out, f"error: {err}")
                unreadable = True
                continue
            for doc in docs:
                key = _key(doc.value) if doc.error is None else None
                result = check_document(doc, old_docs.get(key) if key else None)
                if result.kind is None:
                    skipped += 1
                    if not args.quiet:
                        emit(out, f"{name}:{doc.index}: {result.note}")
                    continue
                checked += 1
                invalid += bool(result.problems)
                for problem in result.problems:
                    emit(out, f"{name}:{doc.index}: {problem}")
    if not args.quiet:
        print(f"{checked} Tuneloop manifest(s) checked: {checked - invalid} valid, {invalid} invalid; {skipped} other document(s) skipped", file=out)
    if unreadable:
        return 2
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
