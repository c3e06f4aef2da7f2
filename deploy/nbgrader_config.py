"""Global nbgrader configuration for a JupyterHub that runs the course: install as /etc/jupyter/nbgrader_config.py.

Every account on the hub reads it (students, instructors, the grading account), so it holds only
what they all share: where the exchange is and which course they are in. The grading rules stay in
the course directory's own nbgrader_config.py, which nbgrader reads on top of this file when it
runs there. Setting up the hub: book/appendix_scaling_up.md, "Running the course for a class".
"""

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

# The same id as CourseDirectory.course_id in the repository's nbgrader_config.py, and the name of
# the formgrader service in deploy/jupyterhub_config.py (nbgrader finds the formgrader by it).
c.CourseDirectory.course_id = "llm-from-scratch"

# The folder through which assignments travel: the instructor releases into it and collects from
# it, students fetch from it and submit into it. It must exist and be writable by everyone
# (create it with: mkdir -p /srv/nbgrader/exchange && chmod 777 /srv/nbgrader/exchange).
c.Exchange.root = "/srv/nbgrader/exchange"
