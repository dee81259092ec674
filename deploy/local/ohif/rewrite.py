#!/usr/bin/env python3
"""Turns the prebuilt OHIF Viewer `dist/` (built for the site root) into one served under a sub-path.

    rewrite.py DIST_DIR APP_CONFIG [--base /viewer/]

OHIF's npm package ships a production build whose every URL starts at `/`: the HTML entry's attributes,
`window.PUBLIC_URL`, webpack's public path `__webpack_require__.p` (chunks, workers and wasm load from it),
the font URLs of the stylesheets, a few literal paths in the bundles and the web-app manifests. The gateway
serves the viewer under `/viewer/`, so each is rewritten here, once, at install time. Every rule that must
match does, or the install fails: a new OHIF release that moved things is caught here, not in a meeting.

Also, for the gateway's strict Content-Security-Policy and for a viewer that never runs stale code:
- the two inline scripts of index.html move to one content-hashed file (no 'unsafe-inline' needed);
- the service worker goes: `init-service-worker.js` (it only unregisters workers, and throws on plain HTTP
  where `navigator.serviceWorker` is undefined) and `sw.js` (a Workbox precache that loads Workbox from
  storage.googleapis.com and would serve a previous release's files from cache);
- files for other deployments go: `google.js` (a Google Cloud configuration), the Netlify/`serve` files;
- `app-config.js` is replaced by ours.
Standard library only: it runs before the workspace exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE = "/viewer/"
INIT_SCRIPT_PREFIX = "proxymage-init."
# Files of OHIF's dist that must not be served (see the module docstring).
REMOVED_FILES = ("sw.js", "init-service-worker.js", "google.js", "_headers", "_redirects", "serve.json")


class RewriteError(RuntimeError):
    """The dist does not look like the one these rules were written for."""


@dataclass(frozen=True)
class Rule:
    """One textual rewrite: `pattern` -> `replacement` (with `{base}`), in the text files matching `globs`."""

    why: str
    globs: tuple[str, ...]
    pattern: str
    replacement: str
    required: bool = True  # must match at least once in the whole dist

    def apply(self, text: str, base: str) -> tuple[str, int]:
        replacement = self.replacement.replace("{base}", base)
        return re.subn(self.pattern, lambda match: match.expand(replacement), text)


# A root-relative path: "/" followed by something other than "/" (which would be protocol-relative).
_ROOT = r"/(?!/)"

RULES: tuple[Rule, ...] = (
    Rule(
        "webpack public path of every bundle with a runtime (main app, web workers): chunks, workers, wasm",
        ("*.js",),
        r'__webpack_require__\.p = "/";',
        '__webpack_require__.p = "{base}";',
    ),
    Rule(
        "stylesheet font URLs (the Inter woff2 files)",
        ("*.css",),
        r"url\(" + _ROOT,
        "url({base}",
    ),
    Rule(
        "microscopy extension: dynamic import of dicom-microscopy-viewer",
        ("*.js",),
        r"browserImportFunction\('/dicom-microscopy-viewer/",
        "browserImportFunction('{base}dicom-microscopy-viewer/",
    ),
    Rule(
        "ONNX runtime wasm directory (AI segmentation), relative to the page: made absolute",
        ("*.js",),
        r"\.env\.wasm\.wasmPaths = 'ort/';",
        ".env.wasm.wasmPaths = '{base}ort/';",
        required=False,
    ),
    Rule(
        "SAM model URLs (not shipped): kept under the viewer's path so they 404 there, not elsewhere",
        ("*.js",),
        r"url: '/(sam_[lh]/)",
        "url: '{base}\\1",
        required=False,
    ),
    Rule(
        "OIDC silent refresh page (OIDC is not configured; kept consistent)",
        ("*.js",),
        r"'/silent-refresh\.html'",
        "'{base}silent-refresh.html'",
        required=False,
    ),
    Rule(
        "web-app manifests and browserconfig: icon paths",
        ("assets/*.json", "assets/*.xml", "assets/*.webapp"),
        r'(["\'=])/assets/',
        "\\1{base}assets/",
        required=False,
    ),
)


def _rewrite_index(dist: Path, base: str) -> list[str]:
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    report: list[str] = []

    html, count = re.subn(r'<html lang="[^"]*">', '<html lang="fr">', html, count=1)
    _expect(count, "index.html: <html lang>")
    report.append('index.html: <html lang="fr"> (the UI is French; screen readers and hyphenation follow)')

    html, count = re.subn(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>', "", html)
    _expect(count, "index.html: init-service-worker.js script")
    report.append("index.html: init-service-worker.js script removed")

    html, count = re.subn(r'(\s(?:src|href|content)=")' + _ROOT, lambda m: m.group(1) + base, html)
    _expect(count, "index.html: root-relative src/href/content attributes")
    report.append(f"index.html: {count} root-relative src/href/content attributes -> {base}")

    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    _expect(len(inline), "index.html: inline scripts")
    body = ";\n".join(script.strip() for script in inline) + ";\n"
    body, count = re.subn(r'window\.PUBLIC_URL="/"', f"window.PUBLIC_URL={json.dumps(base)}", body)
    _expect(count, "index.html: window.PUBLIC_URL")
    init_name = f"{INIT_SCRIPT_PREFIX}{hashlib.sha256(body.encode()).hexdigest()[:16]}.js"
    (dist / init_name).write_text("// Inline scripts of OHIF's index.html, moved out for the CSP.\n" + body)
    first = True

    def external(_match: re.Match[str]) -> str:
        nonlocal first
        tag = f'<script src="{base}{init_name}"></script>' if first else ""
        first = False
        return tag

    html = re.sub(r"<script>(.*?)</script>", external, html, flags=re.DOTALL)
    report.append(f"index.html: {len(inline)} inline scripts -> {init_name} (window.PUBLIC_URL={base!r})")

    noscript = "<noscript>Activez JavaScript pour afficher la visionneuse.</noscript>"
    html, count = re.subn(r"<noscript>[^<]*</noscript>", noscript, html)
    report.append(f"index.html: {count} <noscript> message in French")

    left = re.findall(r'\s(?:src|href|content)="/(?!/)([^"]*)"', html)
    strays = [path for path in left if not ("/" + path).startswith(base)]
    if strays:
        raise RewriteError(f"index.html still has root paths: {strays[:5]}")
    if f'"{base}{base[1:]}' in html:
        raise RewriteError(f"index.html has a doubled {base}")
    index.write_text(html, encoding="utf-8")
    return report


def _rewrite_manifest(dist: Path, base: str) -> list[str]:
    path = dist / "manifest.json"
    if not path.exists():
        return []
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for icon in manifest.get("icons", []):
        if isinstance(icon.get("src"), str) and re.match(_ROOT, icon["src"]):
            icon["src"] = base + icon["src"][1:]
    manifest["start_url"] = base
    manifest["scope"] = base
    manifest["lang"] = "fr-FR"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [f"manifest.json: icon paths, start_url and scope -> {base}"]


def _expect(count: int, what: str) -> None:
    if count == 0:
        raise RewriteError(f"{what}: not found (has OHIF's build changed? check deploy/local/ohif/rewrite.py)")


def rewrite(dist: Path, app_config: Path, base: str = DEFAULT_BASE) -> list[str]:
    """Rewrites `dist` in place for `base`; returns what was done, one line per change."""
    if not (base.startswith("/") and base.endswith("/")) or "//" in base:
        raise ValueError(f"base must look like /viewer/, not {base!r}")
    if not (dist / "index.html").is_file():
        raise RewriteError(f"{dist} has no index.html: not an OHIF dist")

    report: list[str] = []
    for name in REMOVED_FILES:
        target = dist / name
        if target.exists():
            target.unlink()
            report.append(f"removed {name}")

    report += _rewrite_index(dist, base)
    report += _rewrite_manifest(dist, base)

    for rule in RULES:
        total = 0
        for path in sorted(path for glob in rule.globs for path in dist.glob(glob) if path.is_file()):
            text = path.read_text(encoding="utf-8")
            new, count = rule.apply(text, base)
            if count:
                path.write_text(new, encoding="utf-8")
                total += count
        if rule.required:
            _expect(total, rule.why)
        report.append(f"{total:4d} x {rule.why}")

    _check_no_root_public_path(dist, base)
    shutil.copyfile(app_config, dist / "app-config.js")
    report.append(f"app-config.js <- {app_config}")
    return report


def _check_no_root_public_path(dist: Path, base: str) -> None:
    for path in dist.glob("*.js"):
        if '__webpack_require__.p = "/";' in path.read_text(encoding="utf-8"):
            raise RewriteError(f"{path.name} still loads its chunks from /")
    for path in dist.glob("*.css"):
        if re.search(r"url\(/(?!/)", path.read_text(encoding="utf-8").replace("url(" + base, "")):
            raise RewriteError(f"{path.name} still has a root-relative url()")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path)
    parser.add_argument("app_config", type=Path)
    parser.add_argument("--base", default=DEFAULT_BASE)
    args = parser.parse_args(argv)
    try:
        for line in rewrite(args.dist, args.app_config, args.base):
            print(line)
    except RewriteError as error:
        print(f"rewrite.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
