"""The hook binary run as its runners run it: addon-operator runs a module hook as
`hook run N` (N its index in the binary's own `hook list`), shell-operator runs a node
hook as `classic NAME` or as the binary linked under the hook's name. One run is a
directory holding the input files the runner writes and the output files it reads
back, and the environment that names them."""
import functools
import json
import os
import pathlib
import subprocess

from tools.binary import BIN, run

# Output files by the variable that names them: a module hook (addon-operator) writes
# all four, a node hook (shell-operator) the last two.
MODULE_OUTPUTS = {
    "VALUES_JSON_PATCH_PATH": "values-patch.json",
    "CONFIG_VALUES_JSON_PATCH_PATH": "config-values-patch.json",
    "KUBERNETES_PATCH_PATH": "k8s.json",
    "METRICS_PATH": "metrics.json",
}
NODE_OUTPUTS = {"KUBERNETES_PATCH_PATH": "k8s.json", "METRICS_PATH": "metrics.json"}
EMPTY_VALUES = {"global": {}, "embeddedRegistry": {"internal": {}}}


@functools.cache
def hook_names():
    """The module hooks in the binary's order (`hook list`, as addon-operator reads it)."""
    p = run(["hook", "list"], env={})
    assert p.returncode == 0, p.stderr
    return tuple(line.split(" - ", 1)[1] for line in p.stdout.splitlines()[1:])


def hook_index(name):
    """The index addon-operator passes to `hook run` for the module hook `name`."""
    return str(hook_names().index(name))


def one_error_line(p):
    """The runner takes stderr as the error text: exactly one line, a JSON log line at
    level error; returns its message."""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr[:2000]
    assert len(lines[0]) <= 10_000, "runners cut lines at 10,000 characters"
    entry = json.loads(lines[0])
    assert entry["level"] == "error"
    return entry["msg"]


class HookRun:
    """The files and environment of one run in `directory`, as the runner prepares them:
    the binding contexts in bc.json, the output files named (and, with `precreate`,
    created empty as the runners do). Build one with `module()` or `node()`."""

    def __init__(self, directory: pathlib.Path, contexts, outputs, env, precreate=False):
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.outputs = outputs
        self.precreate = precreate
        self.env = {"BINDING_CONTEXT_PATH": str(directory / "bc.json"), **env}
        self.write("bc.json", contexts)
        for var, name in outputs.items():
            self.env[var] = str(directory / name)
            if precreate:
                (directory / name).write_text("")

    @classmethod
    def module(cls, directory, contexts, values=None, config_values=None, precreate=False, env=None):
        """A module hook's run (addon-operator): values.json (default EMPTY_VALUES) and
        config-values.json in, four outputs; `env` is added to the environment."""
        r = cls(directory, contexts, MODULE_OUTPUTS, {"VALUES_PATH": str(directory / "values.json"),
                                                      "CONFIG_VALUES_PATH": str(directory / "config-values.json"),
                                                      **(env or {})}, precreate)
        r.write("values.json", EMPTY_VALUES if values is None else values)
        r.write("config-values.json", {"embeddedRegistry": {}} if config_values is None else config_values)
        return r

    @classmethod
    def node(cls, directory, contexts, node="m1", host_root=None, precreate=False, env=None):
        """A node hook's run (shell-operator in the manager DaemonSet) on master `node`,
        its host under `host_root`; two outputs; `env` is added to the environment."""
        base = {"NODE_NAME": node}
        if host_root is not None:
            base["EMBEDDED_REGISTRY_HOST_ROOT"] = str(host_root)
        return cls(directory, contexts, NODE_OUTPUTS, {**base, **(env or {})}, precreate)

    def write(self, name, content):
        """Writes an input file: text as it is, anything else as JSON."""
        (self.dir / name).write_text(content if isinstance(content, str) else json.dumps(content))

    def environment(self, changes=None):
        """The run's environment with `changes`; None as a value unsets the variable."""
        env = dict(self.env)
        for k, v in (changes or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def run(self, *args, env=None, timeout=120):
        """Runs the binary with these arguments in the run's environment."""
        return run(list(args), env=self.environment(env), timeout=timeout)

    def hook(self, name, env=None):
        """Runs module hook `name` as addon-operator does: `hook run <its index>`."""
        return self.run("hook", "run", hook_index(name), env=env)

    def classic(self, name, env=None, timeout=120):
        """Runs hook `name` with the classic protocol: `classic NAME`."""
        return self.run("classic", name, env=env, timeout=timeout)

    def by_name(self, name, env=None, timeout=120):
        """Runs hook `name` as shell-operator does: the binary linked under the hook's name."""
        link = self.dir / "hooks" / name
        if not link.exists():
            link.parent.mkdir(exist_ok=True)
            os.symlink(BIN, link)
        return subprocess.run([str(link)], env=self.environment(env), capture_output=True, text=True,
                              timeout=timeout)

    def output(self, var):
        """The text of the output file named by `var`; None when absent."""
        p = self.dir / self.outputs[var]
        return p.read_text() if p.exists() else None

    def values_patch(self):
        """The values JSON patch (a list of operations); [] when none was written."""
        text = self.output("VALUES_JSON_PATCH_PATH")
        return json.loads(text) if text else []

    def k8s(self):
        """The Kubernetes operations, one JSON object a line; [] when none."""
        return [json.loads(line) for line in (self.output("KUBERNETES_PATCH_PATH") or "").splitlines() if line]

    def metric_lines(self):
        """The metric operations, one JSON object a line; [] when none."""
        return [json.loads(line) for line in (self.output("METRICS_PATH") or "").splitlines() if line]

    def metrics(self):
        """The metrics set in this run, by name."""
        return {m["name"]: m["value"] for m in self.metric_lines() if "value" in m}

    def written(self):
        """The output variables whose file the run wrote: present (outputs absent
        before) or not empty (outputs precreated)."""
        return {var for var, name in self.outputs.items()
                if (self.dir / name).exists() and (not self.precreate or (self.dir / name).read_text())}

    def files(self):
        """Every file in the run's directory (staged temporary files included)."""
        return sorted(p.name for p in self.dir.iterdir())
