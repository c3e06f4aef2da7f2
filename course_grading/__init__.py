"""course_grading: the instructor's side of the course, kept apart from the learner's ``course_lib``.

- :mod:`course_grading.preprocessors` -- the nbgrader preprocessors that implement the grading rules.
- :mod:`course_grading.sandbox` -- each submission's kernel in a bubblewrap sandbox.
- :mod:`course_grading.judge` and :mod:`course_grading.bridge` -- test cells judged in the grader's
  process, the student's functions reached as proxies that exchange data only.
- :mod:`course_grading.autograde` -- nbgrader's ``Autograde`` converter with the course's submission
  rules (misnamed notebooks, student ids with glob characters); ``nbgrader_config.py`` installs it.
- :mod:`course_grading.parallel_grading` -- ``python -m course_grading.parallel_grading ASSIGNMENT --jobs N``.

``course_lib`` never imports this package.
"""
