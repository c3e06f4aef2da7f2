"""JupyterHub for a class taking "Build an LLM from scratch", graded with nbgrader's exchange.

Start it as root (it starts each user's server, and the formgrader, as that Unix user):

    sudo /opt/llm-from-scratch/.venv/bin/jupyterhub -f /opt/llm-from-scratch/deploy/jupyterhub_config.py

What it expects on the machine (book/appendix_scaling_up.md, "Running the course for a class"):

- COURSE_REPO: a checkout of this repository, readable by everyone, whose environment
  (COURSE_ENV, built by ``make``) also has JupyterHub (``pip install jupyterhub``, which provides
  ``jupyterhub-singleuser``); and the proxy (``npm install -g configurable-http-proxy``). Every
  server runs from that environment, so every user has torch, course_lib and nbgrader.
- Unix accounts (the default authenticator checks Unix passwords) for INSTRUCTORS, STUDENTS and
  the grading account GRADER, which owns COURSE_DIR: a second checkout, private to it, where the
  gradebook and the students' submissions live.
- deploy/nbgrader_config.py installed as /etc/jupyter/nbgrader_config.py (course id, exchange).
- DATA_DIR filled with the course's data files, so that no user downloads them.
"""

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

COURSE_ID = "llm-from-scratch"  # CourseDirectory.course_id; the formgrader service must have this name
COURSE_REPO = "/opt/llm-from-scratch"
COURSE_ENV = f"{COURSE_REPO}/.venv"
GRADER = f"grader-{COURSE_ID}"  # the account that owns the course directory and runs the formgrader
COURSE_DIR = f"/home/{GRADER}/{COURSE_ID}"
DATA_DIR = "/srv/llm-from-scratch/data"  # read by course_lib.data through COURSE_DATA_DIR
INSTRUCTORS = ["instructor1"]  # edit: the Unix user names of the instructors and teaching assistants
STUDENTS = ["student1", "student2"]  # edit: the students' Unix user names
PATH = f"{COURSE_ENV}/bin:/usr/local/bin:/usr/bin:/bin"  # the course's commands first (nbgrader runs `alembic` by name)

c.JupyterHub.bind_url = "http://:8000"  # serve it behind an HTTPS reverse proxy, or set ssl_cert and ssl_key
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/jupyterhub_cookie_secret"
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"

c.Authenticator.allowed_users = set(INSTRUCTORS + STUDENTS)
c.Authenticator.admin_users = set(INSTRUCTORS[:1])  # one hub administrator is enough

# Every user's server: JupyterLab from the course environment, started in the user's home folder.
c.Spawner.cmd = [f"{COURSE_ENV}/bin/jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {
    "PATH": PATH,
    "COURSE_DATA_DIR": DATA_DIR,
    # Takes precedence over the environment's own Jupyter settings: hides nbgrader's formgrader,
    # create-assignment and course-list panels, which work only in the grading account.
    "JUPYTER_CONFIG_PATH": f"{COURSE_REPO}/deploy/jupyter_config",
    # The chapters train small models on the CPU; without a limit every kernel would use every core.
    "OMP_NUM_THREADS": "2",
}
# The token each server gets: the default scopes (report activity, reach itself) plus reaching the
# formgrader service. A token never gets more than its owner may do, so for students the extra
# scopes are dropped; instructors have them through the role below.
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={COURSE_ID}",
    "list:services",
    f"read:services!service={COURSE_ID}",
]

# Instructors may open the formgrader. nbgrader recognises instructor groups by the "formgrade-"
# prefix; with the course id fixed in the global nbgrader config, students need no group.
c.JupyterHub.load_groups = {f"formgrade-{COURSE_ID}": {"users": INSTRUCTORS}}
c.JupyterHub.load_roles = [
    {
        "name": f"formgrade-{COURSE_ID}",
        "description": "open the course's formgrader service",
        "groups": [f"formgrade-{COURSE_ID}"],
        "scopes": [f"access:services!service={COURSE_ID}", "list:services", f"read:services!service={COURSE_ID}"],
    },
]

# The formgrader: a Jupyter server that the hub runs as the grading account, in the course
# directory, so that nbgrader there reads the course's own nbgrader_config.py (grading rules
# included) and its gradebook. Instructors open /services/llm-from-scratch/formgrader and grade
# together in the one gradebook; its terminal (/services/llm-from-scratch/lab) runs the commands.
c.JupyterHub.services = [
    {
        "name": COURSE_ID,
        "url": "http://127.0.0.1:9999",
        "command": [f"{COURSE_ENV}/bin/jupyterhub-singleuser"],
        "user": GRADER,
        "cwd": COURSE_DIR,
        "environment": {"PATH": PATH, "COURSE_DATA_DIR": DATA_DIR, "JUPYTERHUB_DEFAULT_URL": "/lab"},
        "oauth_no_confirm": True,  # instructors are not asked to authorise the service on each visit
    },
]
