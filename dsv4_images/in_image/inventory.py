"""What an image holds, as one JSON document on stdout: the SBOM's raw material (attest/sbom.py).

Runs INSIDE the image with the image's own Python (the venv's, first on PATH), stdlib only. It is not copied
into the image: `dsv4-images sbom` and the build send it at run time (`python -c`, no network). Reads:
  /var/lib/dpkg/status            every installed Debian package (name, version, architecture, source)
  importlib.metadata              every Python distribution the interpreter sees (name per PEP 503, version,
                                  installer, direct_url.json); for FlashInfer's AOT distribution every file its
                                  RECORD lists, hashed on disk (and RECORD's own hash beside it)
  /opt/dsv4-flash/models          every file (relative path, size, sha256)
  /opt/dsv4-flash/patches         every patch (name, sha256)
  /usr/share/dsv4-flash           every file (sha256; the text of small ones: module set, dpkg manifest)
  /etc/os-release
Everything is sorted: the same image gives the same bytes.
"""

import base64
import hashlib
import importlib.metadata
import json
import os
import re
import sys

AOT_DISTRIBUTION = "flashinfer-jit-cache"  # flashinfer_aot.py's DISTRIBUTION
MODELS, PATCHES, SHARE = "/opt/dsv4-flash/models", "/opt/dsv4-flash/patches", "/usr/share/dsv4-flash"
SMALL = 4096  # files of /usr/share/dsv4-flash up to this size are inlined as text (the module set; not
#              the dpkg manifest, which the dpkg database gives in full anyway)


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dpkg(status="/var/lib/dpkg/status"):
    """Installed packages (Status `... installed`) from the dpkg database, by name then architecture."""
    try:
        with open(status, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    packages = []
    for stanza in text.split("\n\n"):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                continue  # a continuation (Description, Conffiles): not needed
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if not fields.get("Package") or not fields.get("Status", "").endswith(" installed"):
            continue
        entry = {"name": fields["Package"], "version": fields.get("Version", ""),
                 "architecture": fields.get("Architecture", "")}
        if fields.get("Source"):
            source, _, version = fields["Source"].partition(" ")
            entry["source"] = source
            entry["source_version"] = version.strip("()") or entry["version"]
        packages.append(entry)
    return sorted(packages, key=lambda p: (p["name"], p["architecture"], p["version"]))


def _record_files(dist):
    """Every RECORD entry with a hash: its path, the sha256 RECORD states and the file's own sha256 on disk."""
    files = []
    for entry in dist.files or ():
        if not entry.hash or entry.hash.mode != "sha256":
            continue
        recorded = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
        path = entry.locate()
        on_disk = sha256_file(path) if os.path.isfile(path) else None
        files.append({"path": str(entry), "record_sha256": recorded, "sha256": on_disk, "size": entry.size})
    return sorted(files, key=lambda f: f["path"])


def _read(dist, name):
    try:
        return dist.read_text(name)
    except (OSError, UnicodeDecodeError):
        return None


def distributions():
    out = []
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        entry = {"name": normalize(name), "version": dist.version,
                 "installer": (_read(dist, "INSTALLER") or "").strip() or None,
                 "location": str(dist.locate_file(""))}
        direct = _read(dist, "direct_url.json")
        if direct:
            try:
                entry["direct_url"] = json.loads(direct)
            except ValueError:
                entry["direct_url"] = {"unparsed": direct[:400]}
        if entry["name"] == AOT_DISTRIBUTION:
            entry["files"] = _record_files(dist)
            providers = [f for f in dist.files or () if str(f).endswith("/providers.json")]
            if providers:
                with open(providers[0].locate(), encoding="utf-8") as f:
                    entry["providers"] = json.load(f)
        out.append(entry)
    return sorted(out, key=lambda d: (d["name"], d["version"], d["location"]))


def tree(root, text=False):
    """Every regular file below root: relative path, size, sha256 (and the text of small files if asked)."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            entry = {"path": os.path.relpath(path, root), "size": os.path.getsize(path), "sha256": sha256_file(path)}
            if text and entry["size"] <= SMALL:
                with open(path, encoding="utf-8", errors="replace") as f:
                    entry["text"] = f.read()
            files.append(entry)
    return sorted(files, key=lambda f: f["path"])


def os_release():
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        return {k: v.strip().strip('"') for k, v in pairs}
    return {}


def main():
    models = {}
    for f in tree(MODELS):
        model, _, rel = f["path"].partition(os.sep)
        models.setdefault(model, []).append(dict(f, path=rel))
    doc = {"inventory_version": 1, "os_release": os_release(), "dpkg": dpkg(),
           "python": {"version": ".".join(map(str, sys.version_info[:3])), "executable": sys.executable,
                      "prefix": sys.prefix, "distributions": distributions()},
           "models": [{"name": k, "path": f"{MODELS}/{k}", "files": v} for k, v in sorted(models.items())],
           "patches": [{"name": f["path"], "sha256": f["sha256"]} for f in tree(PATCHES)],
           "share": tree(SHARE, text=True)}
    json.dump(doc, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
