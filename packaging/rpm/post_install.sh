# The postgres user (sysusers) before /var/lib/stolon (tmpfiles), then let systemd see the units.
# The units are templates: nothing is enabled or started.
if [ -x /usr/bin/systemd-sysusers ]; then
    /usr/bin/systemd-sysusers /usr/lib/sysusers.d/stolon.conf || :
fi
if [ -x /usr/bin/systemd-tmpfiles ]; then
    /usr/bin/systemd-tmpfiles --create /usr/lib/tmpfiles.d/stolon.conf || :
fi
if [ -d /run/systemd/system ]; then
    /usr/bin/systemctl daemon-reload >/dev/null 2>&1 || :
fi
