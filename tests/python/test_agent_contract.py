"""The agent's synchronous run endpoint, driven the way the Python tool's region client drives it.

A client written against the contract ({name, layer, fault_type, parameters, duration} in,
{status, resilience_score, metrics} out) with nothing but the standard library. Needs CHAOSEATER_BIN.
"""

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from processes import BIN, address

TOKEN = "python-contract-token"


@pytest.fixture()
def agent(tmp_path):
    env = dict(os.environ, CHAOSEATER_LOG="warn", CHAOSEATER_AGENT_TOKEN=TOKEN)
    target = subprocess.Popen([BIN, "demo-target", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True, env=env)
    procs = [target]
    try:
        target_addr = address(target, "listening on")[0]
        config = tmp_path / "agent.toml"
        config.write_text(
            f'listen = "127.0.0.1:0"\nproxy_listen = "127.0.0.1:0"\nupstream = "http://{target_addr}"\n'
            f'state_dir = "{tmp_path / "state"}"\n[probe]\nset = "http://{target_addr}/probe-set"\n'
            "interval_ms = 25\nbaseline_ms = 300\nwindow_ms = 200\n[slo]\nstability_window_ms = 400\n"
        )
        agent = subprocess.Popen([BIN, "agent", "--config", str(config)], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(agent)
        api, _proxy = address(agent, "agent API on")
        yield f"http://{api}"
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


class RegionClient:
    """What the Python tool's client does: POST the experiment, read three keys of the answer."""

    def __init__(self, endpoint, token):
        self.endpoint, self.token = endpoint, token

    def run_experiment(self, experiment):
        request = urllib.request.Request(
            f"{self.endpoint}/api/v1/experiments/run",
            data=json.dumps(experiment).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=experiment["duration"] + 30) as response:
            body = json.load(response)
        return {"status": body["status"], "resilience_score": body["resilience_score"], "metrics": body["metrics"]}

    def health(self):
        with urllib.request.urlopen(f"{self.endpoint}/health", timeout=5) as response:
            return response.status, json.load(response)


def test_python_client_runs_an_experiment_unchanged(agent):
    client = RegionClient(agent, TOKEN)
    status, health = client.health()
    assert status == 200 and health["status"] == "healthy"
    result = client.run_experiment({
        "name": "python-client",
        "layer": "model",
        "fault_type": "model_unavailable",
        "parameters": {"failure_rate": 1.0},
        "duration": 1,
    })
    assert result["status"] == "completed"
    metrics = result["metrics"]
    assert metrics["error_count"] > 0
    assert metrics["pipeline_downtime_s"] > 0
    assert 0 <= result["resilience_score"] < 70
    assert metrics["score_version"] == 2
    # Version 2 says what it judged against: the latency objective, and accuracy over every request.
    assert metrics["slo_latency_ms"] > 0 and metrics["slo_latency_quantile"] == 0.99
    assert metrics["coverage"] < 1 and metrics["accuracy_degradation"] > 0


def test_python_client_gets_401_without_token_and_400_for_a_bad_fault(agent):
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        RegionClient(agent, "").run_experiment({"name": "x", "layer": "model", "fault_type": "model_unavailable", "parameters": {}, "duration": 1})
    assert unauthorized.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as bad:
        RegionClient(agent, TOKEN).run_experiment({"name": "x", "layer": "model", "fault_type": "model_unavailable", "parameters": {"failure_rate": 2}, "duration": 1})
    assert bad.value.code == 400
    assert "failure_rate" in json.load(bad.value)["error"]
