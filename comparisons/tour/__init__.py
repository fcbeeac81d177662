"""`python -m flash_green tour`: the course, live.

The engines are a course - each fixes what the previous one got wrong. The
tour runs it: for each chapter, the one small experiment that broke the
previous model, on that model and on this chapter's, side by side, every
request traced by the server (`--trace-requests`, `flash_green.tracing`)
and timed by its client; then a page that shows who served whom and when,
the numbers, the code that changed and the lesson, and ends with the
study's five questions answered from the run. One module per idea, each
importing only those above it here:

=============== ==========================================================
``client``      scripted client connections that log their own times
``experiments`` the experiments, their sizes (`Scale`), running one on a
                traced server (`run_experiment` -> `Run`)
``measures``    a run's numbers: latencies per group, who served, how many
                requests at once per thread and per process, memory
``lessons``     docstring sections and code cut out of the modules (ast)
``chapters``    the course in order, each chapter's targets and verdicts
``plots``       timelines and bar charts (matplotlib)
``answers``     the five questions, answered from the outcomes
``page``        index.html from tour.json
``cli``         planning, running, writing; ``--rebuild`` redraws
=============== ==========================================================
"""
