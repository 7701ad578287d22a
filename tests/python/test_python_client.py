"""Our agents driven by a client written to the Python tool's contract, with aiohttp as it uses.

The Python tool's `DistributedChaosController` POSTs `{name, layer, fault_type, parameters, duration}` to
each region's `/api/v1/experiments/run` with no headers it could add a token to, waits at most
duration + 30 s, and aggregates `resilience_score` and `metrics` across regions (sum, min, max: a None
would raise TypeError). The agents here serve it through `[auth] unauthenticated_from`. Needs
CHAOSEATER_BIN.
"""

import asyncio
import json
import os
import subprocess
import time
import urllib.request

import aiohttp
import pytest

from processes import BIN, address

TOKEN = "python-client-token"


class Region:
    """A demo target and an agent in front of it, the agent open to 127.0.0.0/8 without a token."""

    def __init__(self, tmp, name, ip, slo=""):
        env = dict(os.environ, CHAOSEATER_LOG="warn", CHAOSEATER_AGENT_TOKEN=TOKEN)
        self.name = name
        self.target = subprocess.Popen([BIN, "demo-target", "--listen", f"{ip}:0"], stdout=subprocess.PIPE, text=True, env=env)
        self.agent = None
        target = address(self.target, "listening on")[0]
        config = tmp / f"{name}.toml"
        config.write_text(
            f'listen = "{ip}:0"\nproxy_listen = "{ip}:0"\nupstream = "http://{target}"\n'
            f'state_dir = "{tmp / name}"\n[auth]\nunauthenticated_from = ["127.0.0.0/8"]\n'
            f'[probe]\nset = "http://{target}/probe-set"\ninterval_ms = 25\nbaseline_ms = 300\nwindow_ms = 200\n'
            f"[slo]\nstability_window_ms = 400\n{slo}"
        )
        self.agent = subprocess.Popen([BIN, "agent", "--config", str(config)], stdout=subprocess.PIPE, text=True, env=env)
        self.endpoint = "http://" + address(self.agent, "agent API on")[0]

    def stop_target(self):
        self.target.terminate()
        self.target.wait(timeout=10)

    def close(self):
        for p in (self.agent, self.target):
            if p and p.poll() is None:
                p.terminate()
                p.wait(timeout=10)


class DistributedChaosController:
    """The Python tool's controller, to its contract: regions are {name, endpoint}; no headers."""

    def __init__(self, regions, min_score=70.0):
        self.regions = regions
        self.min_score = min_score

    async def _run_in_region(self, session, region, experiment):
        started = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=experiment["duration"] + 30)
            async with session.post(f"{region['endpoint']}/api/v1/experiments/run", json=experiment, timeout=timeout) as response:
                result = await response.json()
                return {
                    "region": region["name"],
                    "status": "success" if response.status == 200 else "failed",
                    "http_status": response.status,
                    "result": result,
                    "elapsed": time.monotonic() - started,
                }
        except asyncio.TimeoutError:
            return {"region": region["name"], "status": "timeout", "elapsed": time.monotonic() - started}
        except Exception as e:  # the Python tool's catch-all
            return {"region": region["name"], "status": "failed", "error": str(e), "elapsed": time.monotonic() - started}

    async def run_distributed_experiment(self, experiment, strategy="parallel"):
        async with aiohttp.ClientSession() as session:
            if strategy == "parallel":
                results = await asyncio.gather(*(self._run_in_region(session, r, experiment) for r in self.regions))
            elif strategy == "sequential":
                results = []
                for region in self.regions:
                    results.append(await self._run_in_region(session, region, experiment))
            elif strategy == "blast_radius":
                # One region first; the rest only if it held up.
                first = await self._run_in_region(session, self.regions[0], experiment)
                results = [first]
                if first["status"] == "success" and first["result"]["resilience_score"] >= self.min_score:
                    results += await asyncio.gather(*(self._run_in_region(session, r, experiment) for r in self.regions[1:]))
            else:
                raise ValueError(strategy)
        return {"strategy": strategy, "results": list(results), "summary": self._aggregate(results)}

    @staticmethod
    def _aggregate(results):
        """The Python tool's report: arithmetic on every region's score and metrics (None raises)."""
        answered = [r for r in results if r["status"] == "success"]
        scores = [r["result"]["resilience_score"] for r in answered]
        downtime = [r["result"]["metrics"]["pipeline_downtime"] for r in answered]
        recovery = [r["result"]["metrics"]["recovery_time"] for r in answered]
        return {
            "regions": len(results),
            "answered": len(answered),
            "avg_score": sum(scores) / len(scores),
            "min_score": min(scores),
            "max_score": max(scores),
            "total_downtime": sum(downtime),
            "max_recovery_time": max(recovery),
            "report": [f"{r['region']}: {r['result']['resilience_score']:.1f} ({r['result']['metrics']['recovery_time']:.2f}s)" for r in answered],
        }


EXPERIMENT = {"name": "py-outage", "layer": "model", "fault_type": "model_unavailable", "parameters": {"failure_rate": 1.0}, "duration": 1}


@pytest.fixture()
def regions(tmp_path):
    made = []
    try:
        for i, name in enumerate(["us-east", "eu-west", "ap-south"]):
            made.append(Region(tmp_path, name, f"127.0.0.{41 + i}"))
        yield made
    finally:
        for r in made:
            r.close()


def test_the_python_client_runs_parallel_sequential_and_blast_radius_without_a_token(regions):
    controller = DistributedChaosController([{"name": r.name, "endpoint": r.endpoint} for r in regions], min_score=0)
    for strategy in ["parallel", "sequential", "blast_radius"]:
        report = asyncio.run(controller.run_distributed_experiment(EXPERIMENT, strategy))
        assert [r["status"] for r in report["results"]] == ["success"] * 3, report
        for r in report["results"]:
            result = r["result"]
            assert result["status"] == "completed", result
            assert 0 <= result["resilience_score"] < 100, result
            metrics = result["metrics"]
            assert metrics["error_count"] > 0 and metrics["pipeline_downtime"] == metrics["pipeline_downtime_s"]
            assert metrics["recovered"] and metrics["recovery_time"] == metrics["recovery_time_s"], metrics
        assert report["summary"]["answered"] == 3 and report["summary"]["min_score"] < 100


def test_a_failing_region_answers_a_number_and_its_error(regions):
    regions[2].stop_target()
    controller = DistributedChaosController([{"name": r.name, "endpoint": r.endpoint} for r in regions], min_score=0)
    report = asyncio.run(controller.run_distributed_experiment(EXPERIMENT, "parallel"))
    by_region = {r["region"]: r for r in report["results"]}
    failed = by_region["ap-south"]["result"]
    assert failed["status"] == "failed", failed
    assert failed["resilience_score"] == 0, failed
    assert isinstance(failed["metrics"], dict) and failed["metrics"]["error_count"] > 0, failed
    assert "not in a steady state" in failed["error"], failed
    # The aggregate report the Python tool prints works for every region, the failed one included.
    summary = report["summary"]
    assert summary["answered"] == 3 and summary["min_score"] == 0, summary
    assert by_region["us-east"]["result"]["status"] == "completed"


def test_only_the_sync_route_is_open_and_health_says_so(regions):
    region = regions[0]
    with urllib.request.urlopen(f"{region.endpoint}/health", timeout=10) as response:
        health = json.load(response)
    assert any("unauthenticated_from" in w and "127.0.0.0/8" in w for w in health["warnings"]), health

    async def post(path, body, headers=None):
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{region.endpoint}{path}", json=body, headers=headers or {}) as response:
                return response.status, await response.json()

    status, body = asyncio.run(post("/api/v1/experiments", EXPERIMENT))
    assert status == 401, body
    status, body = asyncio.run(post("/api/v1/upstream", {"name": "green"}))
    assert status == 401, body
    # A token that is given must be right, even from an allowed network.
    status, body = asyncio.run(post("/api/v1/experiments/run", EXPERIMENT, {"Authorization": "Bearer wrong"}))
    assert status == 401, body


def test_the_sync_answer_comes_within_duration_plus_30_s_when_recovery_is_slow(tmp_path):
    # A latency objective no request can meet: the steady state never returns after the fault, and the
    # configured recovery wait (120 s) is far beyond what the client waits.
    region = Region(tmp_path, "slow", "127.0.0.44", slo="latency_p95_ms = 0.001\nrecovery_timeout_ms = 120000\n")
    try:
        controller = DistributedChaosController([{"name": region.name, "endpoint": region.endpoint}], min_score=0)
        report = asyncio.run(controller.run_distributed_experiment(EXPERIMENT, "parallel"))
        only = report["results"][0]
        assert only["status"] == "success", only
        assert only["elapsed"] < EXPERIMENT["duration"] + 30, only
        result = only["result"]
        assert result["status"] == "completed", result
        assert result["metrics"]["recovered"] is False and result["metrics"]["recovery_time_s"] is None, result
        assert result["metrics"]["recovery_time"] == result["metrics"]["recovery_window_s"] > 20, result
        assert "not recovered within" in result["note"], result
        assert isinstance(result["resilience_score"], float)
    finally:
        region.close()
