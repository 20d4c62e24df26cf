#!/usr/bin/env bash
# `make run` / `make stop`: a complete local nginx-mdm under ./run/ with its
# own PostgreSQL and Redis (never the system services), a generated SCEP CA,
# a TLS certificate for localhost and an admin API credential.  Safe to run
# twice: what exists is kept, what runs is left running.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/run"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
pgport=${MDM_PG_PORT:-55432}
https_port=${MDM_HTTPS_PORT:-8443}
nginx=${MDM_NGINX:-/usr/sbin/nginx}
module="$top/build/ngx_mdm_module.so"

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

nginx_cmd() {
    "$nginx" -p "$run/" -c "$run/nginx.conf" -e "$run/logs/error.log" "$@"
}

start_postgres() {
    mkdir -p "$run"
    chmod 755 "$run"
    if [ ! -f "$run/pg/PG_VERSION" ]; then
        mkdir -p "$run/pg"
        [ "$(id -u)" = 0 ] && chown postgres: "$run/pg"
        chmod 700 "$run/pg"
        as_pg "$pgbin/initdb" -D "$run/pg" -A trust -U postgres -E UTF8 \
            >/dev/null
    fi
    if ! as_pg "$pgbin/pg_ctl" -D "$run/pg" status >/dev/null 2>&1; then
        as_pg "$pgbin/pg_ctl" -D "$run/pg" -w -l "$run/pg/server.log" \
            -o "-p $pgport -k $run/pg -c listen_addresses=127.0.0.1" start \
            >/dev/null
    fi
    # The schema files are edited in place until a first release: a local
    # database made from other ones is made again (its data is a demo's).
    schema=$(cat "$top"/ngx_mdm_core/sql/*.sql | sha256sum | cut -c1-64)
    if "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -XAtc \
            "SELECT 1 FROM pg_database WHERE datname = 'mdm'" | grep -q 1 \
       && [ "$(cat "$run/schema.sha256" 2>/dev/null)" != "$schema" ]
    then
        echo "schema files changed since the last run: new database mdm"
        "$pgbin/dropdb" -h 127.0.0.1 -p "$pgport" -U postgres --force mdm
    fi
    if ! "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -XAtc \
            "SELECT 1 FROM pg_database WHERE datname = 'mdm'" | grep -q 1
    then
        "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres mdm
    fi
    echo "$schema" > "$run/schema.sha256"
}

start_redis() {
    if ! redis-cli -s "$run/redis.sock" ping >/dev/null 2>&1; then
        redis-server --port 0 --unixsocket "$run/redis.sock" \
            --unixsocketperm 700 --daemonize yes --pidfile "$run/redis.pid" \
            --logfile "$run/redis.log" --dir "$run" --save '' \
            --appendonly yes >/dev/null
        for _ in $(seq 100); do
            redis-cli -s "$run/redis.sock" ping >/dev/null 2>&1 && break
            sleep 0.05
        done
    fi
}

make_pki() {
    local d="$run/pki"
    mkdir -p "$d"
    chmod 700 "$d"
    cd "$d"
    # the SCEP CA that issues device identities
    if [ ! -f ca.pem ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem \
            -days 3650 -subj "/O=nginx-mdm local/CN=nginx-mdm SCEP CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
            2>/dev/null
    fi
    # the CA and server certificate of the HTTPS listener
    if [ ! -f tls-ca.pem ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -keyout tls-ca.key \
            -out tls-ca.pem -days 3650 \
            -subj "/O=nginx-mdm local/CN=nginx-mdm TLS CA" \
            -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null
    fi
    if [ ! -f server.pem ]; then
        # EC P-256: the cheaper full handshake (conf/nginx.conf)
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout server.key -out server.csr -subj "/CN=localhost" \
            2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
            > server.ext
        openssl x509 -req -in server.csr -CA tls-ca.pem -CAkey tls-ca.key \
            -CAcreateserial -out server.pem -days 825 -extfile server.ext \
            2>/dev/null
    fi
    # the signer of enrollment profiles (no EKU: CMS signing)
    if [ ! -f profile-signer.pem ]; then
        openssl req -newkey rsa:2048 -nodes -keyout profile-signer.key \
            -out profile-signer.csr -subj "/O=nginx-mdm local/CN=nginx-mdm profile signer" \
            2>/dev/null
        printf 'keyUsage=critical,digitalSignature\n' > profile-signer.ext
        openssl x509 -req -in profile-signer.csr -CA tls-ca.pem \
            -CAkey tls-ca.key -CAcreateserial -out profile-signer.pem \
            -days 825 -extfile profile-signer.ext 2>/dev/null
    fi
    # a stand-in APNs push certificate (UID = the MDM topic) so that
    # profiles carry a topic; replace push.pem/push.key with the one from
    # identity.apple.com to reach real devices
    if [ ! -f push.pem ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -keyout push.key \
            -out push.pem -days 365 \
            -subj "/UID=com.apple.mgmt.External.$(cat /proc/sys/kernel/random/uuid)/CN=APSP:local" \
            2>/dev/null
    fi
    # the admin API credential (HTTP basic, checked by nginx's auth_basic)
    if [ ! -f api.htpasswd ]; then
        pass=$(openssl rand -hex 16)
        printf 'admin:%s\n' "$(openssl passwd -apr1 "$pass")" > api.htpasswd
        printf 'admin:%s' "$pass" > api.secret
    fi
    cd "$top"
}

write_conf() {
    mkdir -p "$run/logs"
    sed -e "s#/etc/nginx-mdm/pki#$run/pki#g" \
        -e "s#/var/log/nginx-mdm#$run/logs#g" \
        -e "s#/var/lib/nginx-mdm#$run#g" \
        -e "s#@MODULE@#$module#g" \
        -e "s#https://mdm.example.org#https://localhost:$https_port#g" \
        -e "s#server_name mdm.example.org#server_name localhost#g" \
        -e "s#@PG@#host=127.0.0.1 port=$pgport dbname=mdm user=postgres#g" \
        -e "s#@REDIS@#unix:$run/redis.sock#g" \
        -e "s#listen 443 ssl#listen $https_port ssl#g" \
        -e "s#@USER@#$( [ "$(id -u)" = 0 ] && echo 'user root root;' )#g" \
        "$top/conf/nginx.conf" > "$run/nginx.conf"
}

write_env() {
    local base="https://localhost:$https_port"
    local auth
    auth="Basic $(base64 -w0 < "$run/pki/api.secret")"
    cat > "$run/env" <<ENV
MDM_URL=$base
MDM_STATUS_URL=$base/mdm/status
MDM_SCEP_URL=$base/mdm/apple/scep
MDM_CHECKIN_URL=$base/mdm/apple/mdm
MDM_ENROLL_URL=$base/api/v1/fleet/sso
MDM_ADE_URL=$base/api/mdm/apple/enroll
MDM_OTA_URL=$base/api/latest/fleet/enrollment_profiles/ota
MDM_API_URL=$base/api/v1/mdm
MDM_APNS_STATUS_URL=$base/mdm/apns
MDM_CA=$run/pki/ca.pem
MDM_TLS_CA=$run/pki/tls-ca.pem
MDM_API_AUTH='$auth'
ENV
}

start() {
    [ -f "$module" ] || { echo "build the module first (make build)"; exit 1; }
    start_postgres
    start_redis
    make_pki
    write_conf
    write_env
    nginx_cmd -t -q
    if [ -f "$run/nginx.pid" ] && kill -0 "$(cat "$run/nginx.pid")" 2>/dev/null
    then
        nginx_cmd -s reload
    else
        nginx_cmd
    fi
    # wait for the helper to apply the schema
    . "$run/env"
    for _ in $(seq 200); do
        curl -sf --cacert "$MDM_TLS_CA" "$MDM_STATUS_URL" 2>/dev/null \
            | grep -q '"schema_version": [1-9]' && break
        sleep 0.05
    done
    cat <<MSG

nginx-mdm is running on https://localhost:$https_port
  status:      curl --cacert run/pki/tls-ca.pem $MDM_STATUS_URL
  SCEP CA:     $MDM_CA
  TLS CA:      $MDM_TLS_CA (for clients: SSL_CERT_FILE=\$MDM_TLS_CA)
  environment: run/env (source it: set -a; . run/env; set +a)
  logs:        run/logs/error.log
  stop:        make stop

  enrollment profile (signed .mobileconfig, sign in with the API credential):
    curl --cacert run/pki/tls-ca.pem -H "Authorization: \$MDM_API_AUTH" \$MDM_ENROLL_URL -o enroll.mobileconfig
MSG
    grep -E '^MDM_(ENROLL|SCEP|CHECKIN|OTA|API)_URL' "$run/env" | sed 's/^/  /' || true
}

stop() {
    if [ -f "$run/nginx.pid" ] && kill -0 "$(cat "$run/nginx.pid")" 2>/dev/null
    then
        nginx_cmd -s quit || true
    fi
    if [ -S "$run/redis.sock" ]; then
        redis-cli -s "$run/redis.sock" shutdown >/dev/null 2>&1 || true
    fi
    if [ -f "$run/pg/PG_VERSION" ]; then
        as_pg "$pgbin/pg_ctl" -D "$run/pg" -m fast -w stop >/dev/null 2>&1 \
            || true
    fi
    echo "nginx-mdm stopped (data kept in run/)"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop"; exit 2 ;;
esac
