"""Checks docs/CLI.md against the `stowage` command and every relative link of
README.md and docs/ against the repository.

usage: check_docs.py STOWAGE README.md DOC.md...

- Every subcommand `stowage --help` lists has a section "## `stowage NAME`" in
  docs/CLI.md.
- Every flag a subcommand's `--help` prints is written in its section, and
  every flag its section writes is one the subcommand declares (`--help`, and
  `--model DIR --help` for commands whose parser depends on a model folder).
- Every relative Markdown link in README.md and docs/*.md names a file or
  folder that exists inside the repository (the folder holding README.md and
  WORKSPACE); none points outside it (e.g. to ../shared/).
The checks run first on broken inputs made here, which they must reject.
"""
import os
import re
import subprocess
import sys
import tempfile

FLAG = re.compile(r"--[a-z][a-z0-9-]*")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SECTION = re.compile(r"^## `stowage ([a-z-]+)`", re.M)


def command_names(help_text):
    names, listing = [], False
    for line in help_text.splitlines():
        if line.strip() == "commands:":
            listing = True
        elif listing and line.startswith("  ") and line.strip():
            names.append(line.split()[0])
    return names


def sections(cli_md):
    """{command: its section's text}, up to the next level-2 heading."""
    out = {}
    heads = list(re.finditer(r"^## .*$", cli_md, re.M))
    for i, h in enumerate(heads):
        m = SECTION.match(h.group(0))
        if m:
            end = heads[i + 1].start() if i + 1 < len(heads) else len(cli_md)
            out[m.group(1)] = cli_md[h.start():end]
    return out


def check_cli(commands, help_flags, cli_md):
    """Problems, given each command's declared flags (without --help)."""
    problems = []
    secs = sections(cli_md)
    for name in commands:
        if name not in secs:
            problems.append(f"docs/CLI.md has no section \"## `stowage {name}`\"")
            continue
        written = {f[2:] for f in FLAG.findall(secs[name])}
        declared = help_flags[name]
        for flag in sorted(declared - written):
            problems.append(f"docs/CLI.md: `stowage {name}` declares --{flag}, its section does not write it")
        for flag in sorted(written - declared - {"help"}):
            problems.append(f"docs/CLI.md: the `stowage {name}` section writes --{flag}, the command does not declare it")
    return problems


def check_links(root, files):
    problems = []
    root = os.path.realpath(root)
    for path in files:
        text = open(path, encoding="utf-8").read()
        rel = os.path.relpath(path, root)
        if "../shared/" in text:
            problems.append(f"{rel}: mentions ../shared/, which is outside the repository")
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same file
            target = target.split("#", 1)[0]
            resolved = os.path.realpath(os.path.join(os.path.dirname(path), target))
            if os.path.commonpath([resolved, root]) != root:
                problems.append(f"{rel}: link '{target}' leaves the repository")
            elif not os.path.exists(resolved):
                problems.append(f"{rel}: link '{target}' names nothing in the repository")
    return problems


def help_of(stowage, args):
    run = subprocess.run([stowage] + args, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: stowage {' '.join(args)} exited {run.returncode}: {run.stderr}")
    return run.stdout


def self_test():
    doc = "## `stowage a`\n\nflags `--x`, `--stale`\n\n## Inputs\n`--y`\n"
    got = check_cli(["a", "b"], {"a": {"x", "y"}, "b": set()}, doc)
    assert any("declares --y" in p for p in got), got  # --y only outside the section
    assert any("writes --stale" in p for p in got), got
    assert any("no section" in p and "stowage b" in p for p in got), got
    assert check_cli(["a"], {"a": {"x", "stale"}}, doc) == []
    with tempfile.TemporaryDirectory() as repo:
        os.mkdir(os.path.join(repo, "docs"))
        open(os.path.join(repo, "docs", "A.md"), "w").write("x")
        readme = os.path.join(repo, "README.md")
        open(readme, "w").write("[a](docs/A.md#top) [w](https://x.org) [s](#s) "
                                "[gone](docs/B.md) [out](../elsewhere.md) see ../shared/CLI.md")
        got = check_links(repo, [readme])
        assert len(got) == 3, got
        assert any("docs/B.md" in p for p in got) and any("leaves" in p for p in got), got


def main():
    stowage, readme, docs = sys.argv[1], sys.argv[2], sys.argv[3:]
    self_test()
    root = os.path.dirname(os.path.realpath(readme))
    if not os.path.exists(os.path.join(root, "WORKSPACE")):
        sys.exit(f"FAIL: cannot find the repository beside {os.path.realpath(readme)}")
    commands = command_names(help_of(stowage, ["--help"]))
    if len(commands) < 5:
        sys.exit(f"FAIL: `stowage --help` listed {commands}")
    with tempfile.TemporaryDirectory() as folder:
        open(os.path.join(folder, "config.json"), "w").write("{}")
        flags = {}
        for name in commands:
            declared = {f[2:] for f in FLAG.findall(help_of(stowage, [name, "--help"]))}
            if "model" in declared:  # a model folder may bring its own parser
                text = help_of(stowage, [name, "--model", folder, "--help"])
                declared |= {f[2:] for f in FLAG.findall(text)}
            declared.discard("help")
            flags[name] = declared
    cli_md = [d for d in docs if os.path.basename(d) == "CLI.md"]
    if len(cli_md) != 1:
        sys.exit(f"FAIL: expected one docs/CLI.md among {docs}")
    problems = check_cli(commands, flags, open(cli_md[0], encoding="utf-8").read())
    problems += check_links(root, [os.path.realpath(readme)] + [os.path.realpath(d) for d in docs])
    for p in problems:
        print("FAIL:", p)
    if problems:
        sys.exit(1)
    print(f"docs match: {len(commands)} commands, {sum(map(len, flags.values()))} flags, "
          f"links of {1 + len(docs)} files")


if __name__ == "__main__":
    main()
