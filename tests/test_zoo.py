"""The zoo against a loopback HTTP server in the test process (never the real network)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from decola_core.config import list_recipes, load_recipe
from decola_core.zoo import Artifact, Downloader, ZooError, load_registry, resolve_weights

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not a multiple of the 1 MiB read size + offset


@dataclass
class Route:
    body: bytes = PAYLOAD
    content_type: str = "application/octet-stream"
    ranges: bool = True  # honour Range requests
    drop_after: int | None = None  # close the connection after this many body bytes, once
    fail_first: int = 0  # answer 500 this many times first
    status: int = 200
    redirect: str | None = None


@dataclass
class LoopbackServer:
    url: str
    routes: dict[str, Route]
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def requests_for(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


@pytest.fixture()
def server() -> Iterator[LoopbackServer]:
    routes: dict[str, Route] = {}
    state = LoopbackServer("", routes)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            state.requests.append((self.path, self.headers.get("Range")))
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if route.redirect:
                self.send_response(302)
                self.send_header("Location", route.redirect)
                self.end_headers()
                return
            if route.fail_first > 0:
                route.fail_first -= 1
                self.send_error(500)
                return
            if route.status != 200:
                self.send_error(route.status)
                return
            body, start = route.body, 0
            match = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and route.ranges:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:]
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if route.drop_after is not None:
                self.wfile.write(chunk[: route.drop_after])
                route.drop_after = None
                self.close_connection = True
                return
            self.wfile.write(chunk)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def artifact(server: LoopbackServer, path: str, *, sha256: str | None = None, **route) -> Artifact:
    server.routes[path] = Route(**route)
    return Artifact(name=Path(path).stem, kind="checkpoint", url=server.url + path, sha256=sha256)


def downloader(tmp_path: Path, **kwargs) -> Downloader:
    return Downloader(
        tmp_path / "store", retries=3, backoff=0.0, timeout=10, show_progress=False, **kwargs
    )


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_the_registry_checksum(server, tmp_path: Path) -> None:
    item = artifact(server, "/model.pth", sha256=SHA)
    dl = downloader(tmp_path)
    path = dl.fetch(item)
    assert path.read_bytes() == PAYLOAD and path.name == "model.pth"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pth"]  # no .part, no lock
    dl.fetch(item)  # cached: no second request
    assert len(server.requests_for("/model.pth")) == 1
    assert dl.verify(item).status == "ok"


def test_resume_after_a_dropped_connection(server, tmp_path: Path) -> None:
    item = artifact(server, "/big.pth", sha256=SHA, drop_after=300_000)
    path = downloader(tmp_path).fetch(item)
    assert path.read_bytes() == PAYLOAD
    assert server.requests_for("/big.pth") == [None, "bytes=300000-"]


def test_resume_from_a_part_file_left_by_an_earlier_run(server, tmp_path: Path) -> None:
    item = artifact(server, "/half.pth", sha256=SHA)
    store = tmp_path / "store"
    store.mkdir()
    (store / "half.pth.part").write_bytes(PAYLOAD[:123_456])
    path = downloader(tmp_path).fetch(item)
    assert path.read_bytes() == PAYLOAD
    assert server.requests_for("/half.pth") == ["bytes=123456-"]


def test_part_file_that_is_already_complete(server, tmp_path: Path) -> None:
    item = artifact(server, "/done.pth", sha256=SHA)
    store = tmp_path / "store"
    store.mkdir()
    (store / "done.pth.part").write_bytes(PAYLOAD)
    assert downloader(tmp_path).fetch(item).read_bytes() == PAYLOAD


def test_server_without_range_support_restarts_cleanly(server, tmp_path: Path) -> None:
    item = artifact(server, "/norange.pth", sha256=SHA, ranges=False)
    store = tmp_path / "store"
    store.mkdir()
    (store / "norange.pth.part").write_bytes(b"x" * 5000)  # garbage that must not survive
    path = downloader(tmp_path).fetch(item)
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_is_refused_and_nothing_is_left(server, tmp_path: Path) -> None:
    item = artifact(server, "/bad.pth", sha256="0" * 64)
    with pytest.raises(ZooError, match="checksum mismatch for 'bad'"):
        downloader(tmp_path).fetch(item)
    assert list((tmp_path / "store").iterdir()) == []


def test_unknown_checksum_is_pinned_on_first_download(server, tmp_path: Path) -> None:
    item = artifact(server, "/tofu.pth")
    dl = downloader(tmp_path)
    path = dl.fetch(item)
    lock = json.loads((tmp_path / "store" / "zoo-lock.json").read_text())
    assert lock["artifacts"]["tofu"]["sha256"] == SHA
    assert lock["artifacts"]["tofu"]["size"] == len(PAYLOAD)
    assert dl.verify(item).status == "ok"
    path.write_bytes(b"tampered")
    result = dl.verify(item)
    assert (result.status, result.expected) == ("mismatch", SHA)
    # the server now serves different bytes: a forced re-download is refused
    server.routes["/tofu.pth"].body = b"other bytes"
    with pytest.raises(ZooError, match="lock file"):
        dl.fetch(item, force=True)


def test_offline_mode_refuses_the_network_but_uses_the_cache(server, tmp_path: Path) -> None:
    item = artifact(server, "/off.pth", sha256=SHA)
    with pytest.raises(ZooError, match="offline mode is on"):
        downloader(tmp_path, offline=True).fetch(item)
    assert server.requests == []
    downloader(tmp_path).fetch(item)
    assert downloader(tmp_path, offline=True).fetch(item).is_file()


def test_transient_errors_are_retried_and_redirects_followed(server, tmp_path: Path) -> None:
    server.routes["/real.pth"] = Route(fail_first=2)
    server.routes["/moved.pth"] = Route(redirect="/real.pth")
    item = Artifact(name="moved", kind="checkpoint", url=server.url + "/moved.pth", sha256=SHA)
    assert downloader(tmp_path).fetch(item).read_bytes() == PAYLOAD
    assert len(server.requests_for("/real.pth")) == 3


def test_permanent_errors_and_html_pages_fail_at_once(server, tmp_path: Path) -> None:
    missing = artifact(server, "/gone.pth", status=404)
    with pytest.raises(ZooError, match="HTTP 404"):
        downloader(tmp_path).fetch(missing)
    assert len(server.requests_for("/gone.pth")) == 1
    page = artifact(server, "/page.pth", body=b"<html>login</html>", content_type="text/html")
    with pytest.raises(ZooError, match="served an HTML page"):
        downloader(tmp_path).fetch(page)


def test_giving_up_keeps_the_part_for_a_later_resume(server, tmp_path: Path) -> None:
    item = artifact(server, "/flaky.pth", sha256=SHA, fail_first=10)
    with pytest.raises(ZooError, match="failed after 3 retries"):
        downloader(tmp_path).fetch(item)


def write_registry(path: Path, server: LoopbackServer, **extra) -> Path:
    server.routes["/mirror.pth"] = Route()
    entries = [
        {
            "name": "decola-phase1-l-r50",
            "kind": "checkpoint",
            "url": server.url + "/mirror.pth",
            "sha256": SHA,
            "recipe": "DECOLA_PHASE1_L_CLIP_R5021k_4x",
        },
        {"name": "my-model", "kind": "checkpoint", "url": server.url + "/mirror.pth", **extra},
    ]
    path.write_text(yaml.safe_dump({"artifacts": entries}))
    return path


def test_registry_override_file(server, tmp_path: Path, monkeypatch) -> None:
    builtin = load_registry()
    monkeypatch.setenv("DECOLA_ZOO_REGISTRY", str(write_registry(tmp_path / "r.yaml", server)))
    registry = load_registry()
    assert len(registry) == len(builtin) + 1
    overridden = registry.get("zoo:decola-phase1-l-r50")
    assert overridden.url.startswith(server.url) and overridden.source == str(tmp_path / "r.yaml")
    assert registry.get("my-model").cache_name == "my-model.pth"
    path = resolve_weights("decola-phase1-l-r50", tmp_path / "cache", show_progress=False)
    assert path == tmp_path / "cache" / "zoo" / "decola-phase1-l-r50.pth"
    assert path.read_bytes() == PAYLOAD


def test_bad_registry_files_name_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("artifacts:\n  - {name: x, kind: weights, url: http://h/x}\n")
    with pytest.raises(ZooError, match=r"bad.yaml: artifact x: kind: Input should be"):
        load_registry(bad)
    bad.write_text("artifacts:\n  - {name: x, kind: checkpoint, url: ftp://h/x, colour: red}\n")
    with pytest.raises(ZooError, match="unknown key 'colour'"):
        load_registry(bad)
    with pytest.raises(ZooError, match="not found"):
        load_registry(tmp_path / "missing.yaml")


def test_resolve_weights_accepts_paths_and_explains_unknown_names(tmp_path: Path) -> None:
    local = tmp_path / "w.pth"
    local.write_bytes(b"w")
    assert resolve_weights(str(local), tmp_path, offline=True) == local
    with pytest.raises(ZooError, match="neither an existing file nor a zoo name.*did you mean"):
        resolve_weights("decola-phase1-l-r5", tmp_path, offline=True)
    with pytest.raises(ZooError, match="offline mode is on"):
        resolve_weights("zoo:decola-phase1-l-r50", tmp_path, offline=True)


def test_cli_download_verify_path_and_offline(decola, server, tmp_path: Path) -> None:
    env = {
        "DECOLA_ZOO_REGISTRY": str(write_registry(tmp_path / "r.yaml", server)),
        "DECOLA_CACHE_DIR": str(tmp_path / "cache"),
    }

    def zoo(*args: str) -> subprocess.CompletedProcess[str]:
        return decola("zoo", *args, env=env, timeout=120)

    refused = zoo("download", "my-model", "--offline")
    assert refused.returncode == 2 and "offline mode is on" in refused.stderr
    assert zoo("path", "my-model").returncode == 1
    done = zoo("download", "my-model")
    assert done.returncode == 0, done.stderr
    stored = tmp_path / "cache" / "zoo" / "my-model.pth"
    assert stored.read_bytes() == PAYLOAD
    assert zoo("path", "my-model").stdout.strip() == str(stored)
    verified = zoo("verify")
    assert verified.returncode == 0 and "ok" in verified.stdout
    stored.write_bytes(b"corrupt")
    assert zoo("verify", "my-model").returncode == 1
    typo = zoo("download", "my-modle")
    assert typo.returncode == 2 and "did you mean 'my-model'" in typo.stderr
    other = tmp_path / "elsewhere"
    assert zoo("download", "my-model", "--dir", str(other)).returncode == 0
    assert (other / "my-model.pth").read_bytes() == PAYLOAD


# Every row of the original model-zoo tables (spec pipeline.md §8.1-8.3), by URL id.
ZOO_TABLE_ROWS = {
    "open-vocabulary LVIS, Deformable DETR": [
        "ubry0bcodnd4y59zjatlkpej2bf2eaqr",
        "jditk3ofcguxvx5ff8zmvwv8aeveee9n",
        "t1sos72n3582tqhuy7cw6rtre1p0sdfy",
        "yz05g2x4bsc8q3avv6bskubi22266ca2",
        "d9vftqopdo56lobunqwrmo34dj5mh917",
        "g5qw22h02no3b3h0dyw0hdpxmuiactwa",
        "d8ej3y9wyemayx0gvlpnli44d9q39ycp",
        "ytox0hpx411lgs63vcudg03diov63551",
        "0ftx2ywoanv8rw7r8jj1iuifvvs212zv",
    ],
    "standard LVIS, Deformable DETR": [
        "2n608myne7ou0nim3ay3lv0vycm770yd",
        "ub5uwggzwqq288pagdpifzxqdgw3benh",
        "t12ua5ixg92geoyocwyng0khvopvyh45",
        "x28jn9sypl9t26d4052d8pyq1xmt4dap",
        "6rqosjkvp3sp13jnkubu8xltbz1r7v94",
        "jbmuxjhqt3jy1crhqye2lbxu0g10818i",
        "pziu6s5hmwuqnivet90ad2k9t7nw8suy",
        "l2iba0tofg7pbx6etwer45jpvz2omgqc",
    ],
    "phase 1, c-mAP": [
        "ubry0bcodnd4y59zjatlkpej2bf2eaqr",
        "tn9i8w7tuz0elggris4pu4y8pbstf0jw",
        "2n608myne7ou0nim3ay3lv0vycm770yd",
        "5lsfcqjg4gxpzuc90lv5r1lquwl1cojb",
        "yz05g2x4bsc8q3avv6bskubi22266ca2",
        "o7wfuk5r3m4vesrness4ssk37x1aba99",
        "6rqosjkvp3sp13jnkubu8xltbz1r7v94",
        "t751ml0zayrx89qrj2c22yzcaxqdxvvn",
    ],
    "zero-shot transfer (released rows)": [
        "rfa041u6i3lx07lz49az051b8xp11ocr",
        "2k40r5ms1prl6mezbukeyysh2nsw3dzu",
    ],
    "CenterNet2, open-vocabulary LVIS": [
        "BoxSup-C2_Lbase_CLIP_R5021k_640b64_4x",
        "Detic_LbaseI_CLIP_R5021k_640b64_4x_ft4x_max-size",
        "o02o305iczlm4atzvtl7lm48l7ztppk3",
        "les9gtjvdufqvgfh5ozxyv9nv50j63ow",
        "BoxSup-C2_Lbase_CLIP_SwinB_896b32_4x",
        "Detic_LbaseI_CLIP_SwinB_896b32_4x_ft4x_max-size",
        "34dx5g2flhvnnqnw2s73y8jjod2wi94j",
    ],
    "CenterNet2, standard LVIS": [
        "BoxSup-C2_L_CLIP_R5021k_640b64_4x",
        "Detic_LI_CLIP_R5021k_640b64_4x_ft4x_max-size",
        "litahdtnkf0u89d2ani47z9o21hkkpj8",
        "89o96f5ll7o464jvle2d7cidwmcnl9w1",
        "BoxSup-C2_L_CLIP_SwinB_896b32_4x",
        "Detic_LI_CLIP_SwinB_896b32_4x_ft4x_max-size",
        "8ls60yfw0km4ixeteq4a1jigud5yttwv",
    ],
    "pseudo-annotations": [
        "hgedqhl48gvpsspdnpjom5ihlmmsek71",
        "xt0nfki0qu6che3l4cb3spdq4u5i2ugq",
        "uijhijbo68qa5qdspo6m336gwit27c24",
        "kg98lg7a71ls35aykspsfwvg8xiy8txk",
    ],
}


def test_registry_has_every_row_of_the_original_zoo_tables() -> None:
    registry = load_registry()
    stems = {Path(a.url).stem: a for a in registry}
    for table, rows in ZOO_TABLE_ROWS.items():
        missing = [row for row in rows if row not in stems]
        assert not missing, table
    unique = {row for rows in ZOO_TABLE_ROWS.values() for row in rows}
    released = [a for a in registry if a.kind in ("checkpoint", "pseudo-labels")]
    assert len(released) == len(unique) == 41
    assert {a.kind for a in registry} == {
        "checkpoint",
        "backbone",
        "pseudo-labels",
        "metadata",
        "clip",
        "sam",
    }
    names = [a.name for a in registry]
    assert all(n == n.lower() for n in names)


def test_every_zoo_name_a_recipe_uses_exists_and_recipes_exist() -> None:
    registry = load_registry()
    shipped = set(list_recipes())
    for name in shipped:
        weights = load_recipe(name).model.weights
        if weights.startswith("zoo:"):
            registry.get(weights)
    for item in registry:
        if item.kind == "checkpoint" and item.runnable and item.recipe:
            assert item.recipe in shipped, item.name


@pytest.mark.reference
def test_published_metadata_checksums_match_the_original_files(reference_dir: Path) -> None:
    registry = load_registry()
    for name in ("lvis-clip-embeddings", "lvis-clip-object-embedding", "lvis-category-info"):
        item = registry.get(name)
        data = (reference_dir / "metadata" / item.cache_name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == item.sha256


def test_readme_zoo_table_is_generated_from_the_registry() -> None:
    from decola_cli.commands.zoo import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table(list(load_registry())) in readme
