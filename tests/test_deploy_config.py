"""deploy/: the JupyterHub and nbgrader configuration for running the course for a class.

JupyterHub is not a dependency of the course, so its configuration is loaded with traitlets, the
loader JupyterHub itself uses, and checked for the settings the appendix "Scaling up" promises.
The nbgrader configuration is also applied to nbgrader's own classes, which proves its names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from traitlets.config import Config, PyFileConfigLoader

from conftest import ROOT

DEPLOY = ROOT / "deploy"
APPENDIX = ROOT / "book" / "appendix_scaling_up.md"
GUIDE = ROOT / "book" / "instructor_guide.md"
COURSE_ID = "llm-from-scratch"
EXCHANGE = "/srv/nbgrader/exchange"


def load(path) -> Config:
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


@pytest.fixture(scope="module")
def hub() -> Config:
    return load(DEPLOY / "jupyterhub_config.py")


@pytest.fixture(scope="module")
def global_nbgrader() -> Config:
    return load(DEPLOY / "nbgrader_config.py")


def test_global_nbgrader_config_names_the_course_and_the_exchange(global_nbgrader):
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default.exchange import Exchange

    course = load(ROOT / "nbgrader_config.py")  # the course directory's own configuration
    assert global_nbgrader.CourseDirectory.course_id == course.CourseDirectory.course_id == COURSE_ID
    assert global_nbgrader.Exchange.root == EXCHANGE
    # nbgrader's classes take the values: the option names are right
    assert CourseDirectory(config=global_nbgrader).course_id == COURSE_ID
    assert Exchange(config=global_nbgrader).root == EXCHANGE


def test_hub_runs_every_server_from_the_course_environment(hub):
    env = "/opt/llm-from-scratch/.venv"
    assert hub.Spawner.cmd == [f"{env}/bin/jupyterhub-singleuser"]
    assert hub.Spawner.default_url == "/lab"
    assert hub.Spawner.environment["PATH"].startswith(f"{env}/bin:")
    assert hub.Spawner.environment["JUPYTER_CONFIG_PATH"] == "/opt/llm-from-scratch/deploy/jupyter_config"
    assert hub.Spawner.environment["COURSE_DATA_DIR"]
    assert {"instructor1", "student1"} <= hub.Authenticator.allowed_users
    assert hub.Authenticator.admin_users <= hub.Authenticator.allowed_users


def test_formgrader_is_a_service_named_after_the_course_for_the_instructors_only(hub):
    (service,) = hub.JupyterHub.services
    assert service["name"] == COURSE_ID  # nbgrader finds the formgrader by the course id
    assert service["user"] == f"grader-{COURSE_ID}"
    assert service["cwd"] == f"/home/grader-{COURSE_ID}/{COURSE_ID}"
    assert service["command"] == hub.Spawner.cmd
    assert service["environment"]["COURSE_DATA_DIR"] == hub.Spawner.environment["COURSE_DATA_DIR"]
    assert "JUPYTER_CONFIG_PATH" not in service["environment"]  # the grader keeps every nbgrader panel

    group = f"formgrade-{COURSE_ID}"
    instructors = hub.JupyterHub.load_groups[group]["users"]
    assert instructors and not set(instructors) & {"student1", "student2"}
    access = f"access:services!service={COURSE_ID}"
    (role,) = [r for r in hub.JupyterHub.load_roles if access in r["scopes"]]
    assert role["groups"] == [group] and "users" not in role
    # servers may use their owner's access to the service (a token never exceeds its owner's rights)
    assert {access, "users:activity!user", "access:servers!server"} <= set(hub.Spawner.server_token_scopes)


def test_user_servers_hide_the_instructor_panels():
    config = DEPLOY / "jupyter_config"
    lab = json.loads((config / "labconfig" / "page_config.json").read_text())["disabledExtensions"]
    assert lab == {f"@jupyter/nbgrader:{name}": True for name in ("formgrader", "create-assignment", "course-list")}
    # the effective server configuration of a user's server, as Jupyter computes it
    code = ("from jupyter_server.serverapp import ServerApp\n"
            "app = ServerApp(); app.load_config_file(); app.find_server_extensions()\n"
            "import json; print(json.dumps({k: v for k, v in app.jpserver_extensions.items() if 'nbgrader' in k}))")
    env = dict(os.environ, JUPYTER_CONFIG_PATH=str(config))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    extensions = json.loads(result.stdout.strip().splitlines()[-1])
    assert extensions["nbgrader.server_extensions.formgrader"] is False
    assert extensions["nbgrader.server_extensions.course_list"] is False
    assert extensions["nbgrader.server_extensions.assignment_list"] is True  # fetch and submit stay
    assert extensions["nbgrader.server_extensions.validate_assignment"] is True


def test_docs_describe_these_files():
    appendix = APPENDIX.read_text()
    for promised in ("deploy/jupyterhub_config.py", "deploy/nbgrader_config.py", EXCHANGE, COURSE_ID,
                     f"/services/{COURSE_ID}/formgrader", "nbgrader release_assignment", "nbgrader collect",
                     "nbgrader autograde", "python -m course_grading.parallel_grading", "nbgrader generate_feedback",
                     "nbgrader release_feedback"):
        assert promised in appendix, f"the appendix does not mention {promised!r}"
    # the instructor guide links to the appendix's section by its label
    assert "(jupyterhub-class)=" in appendix and "{ref}`jupyterhub-class`" in GUIDE.read_text()
