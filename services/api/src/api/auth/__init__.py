"""Sign-in for the api: cookies, the signed-in dependency, password checks.

Sessions live in the session service; the api holds only the cookie's value in transit and
asks the service on every authenticated request (fail closed: no answer, no access).
"""
