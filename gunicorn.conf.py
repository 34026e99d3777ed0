"""gunicorn's settings, read from the project folder (`make serve`, production).

The command line gives the address (``--bind``); ``WEB_CONCURRENCY`` sets the
number of workers (gunicorn's default: 1).
"""

# Requests to standard output, as a container's log collector expects.
accesslog = "-"
# gunicorn 27's control socket sits at one path per user: two servers on a
# host would contend for it, and nothing here uses it.
control_socket_disable = True
