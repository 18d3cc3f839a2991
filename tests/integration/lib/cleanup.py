"""Remove every Docker container this integration run created: labelled
io.container-manager.cuid AND (bind-mounted from CM_DATA_DIR or named after a cuid in CM_DB).
Containers of any other stack on the machine are left alone."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cmtest  # noqa: E402

removed = 0
try:
    mine = cmtest.ours_managed()
except Exception as e:  # database gone or unreadable: fall back to the bind-mount rule only
    print("cleanup: %s" % e, file=sys.stderr)
    cmtest.db_container_cuids = lambda: []
    mine = cmtest.ours_managed()
for name, c in mine.items():
    st, body = cmtest.docker_request("DELETE", "/containers/%s?force=1&v=1" % c["Id"])
    if st in (204, 404):
        removed += 1
    else:
        print("cleanup: cannot remove %s: %s %s" % (name, st, body), file=sys.stderr)
print("cleanup: removed %d managed container(s) of this run" % removed)
