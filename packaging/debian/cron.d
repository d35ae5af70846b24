# /etc/cron.d/barman: barman-ts maintenance every minute (WAL archiving and streaming, retention,
# backup completion), as Debian's barman package schedules it.
MAILTO=root
* * * * * barman [ -x /usr/bin/barman ] && /usr/bin/barman -q cron
