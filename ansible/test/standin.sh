#!/bin/sh
# A stand-in for an image that cannot be pulled here (Grafana, Loki, cAdvisor, Mongo, ...), used
# only by ansible/test/run: busybox serving HTTP on the real image's port. It ignores its
# arguments (it is also /bin/bash, for services that override the entrypoint), writes one line
# into each data directory it is given that is mounted, and answers /metrics, /ready and
# /api/health. It proves that a role deployed the container; it does none of the real work.
name=${STANDIN_NAME:-standin}
port=${STANDIN_PORT:-8080}
for d in $STANDIN_DATA_DIRS; do
    if [ -d "$d" ]; then
        echo "$name $(hostname) $(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$d/standin.log"
    fi
done
mkdir -p /www/api
echo "stand-in for $name" >/www/index.html
printf '# HELP standin_up A stand-in for %s is serving.\n# TYPE standin_up gauge\nstandin_up{standin="%s"} 1\n' \
    "$name" "$name" >/www/metrics
echo ready >/www/ready
echo '{"database": "ok", "standin": true}' >/www/api/health
echo "stand-in for $name serving on :$port"
exec httpd -f -p "$port" -h /www
