#!/bin/sh
# Start Alertmanager from the committed template infra/compose/alertmanager.yml.
#
# Alertmanager expands no environment variables in its config, so this fills the
# ${DRIFTSTREAM_...} placeholders and keeps the SMTP password in a 0600 file that the
# config names (smtp_auth_password_file); the password never enters the config.
#
# Usage: alertmanager-entrypoint.sh TEMPLATE OUTPUT COMMAND [ARGS...]
# The password comes from DRIFTSTREAM_SMTP_PASSWORD (written to
# DRIFTSTREAM_SMTP_PASSWORD_FILE, default /tmp/driftstream-secrets/smtp_password) or,
# without it, from an existing DRIFTSTREAM_SMTP_PASSWORD_FILE such as a docker secret.
set -eu

if [ "$#" -lt 3 ]; then
    echo "usage: $0 TEMPLATE OUTPUT COMMAND [ARGS...]" >&2
    exit 2
fi
template=$1
out=$2
shift 2

missing=""
for var in DRIFTSTREAM_SMTP_HOST DRIFTSTREAM_SMTP_USER DRIFTSTREAM_PAGER_WEBHOOK_URL; do
    eval "value=\${$var:-}"
    [ -n "$value" ] || missing="$missing $var"
done

: "${DRIFTSTREAM_SMTP_PASSWORD:=}"
: "${DRIFTSTREAM_SMTP_PASSWORD_FILE:=/tmp/driftstream-secrets/smtp_password}"
if [ -n "$DRIFTSTREAM_SMTP_PASSWORD" ]; then
    umask 077
    mkdir -p "$(dirname "$DRIFTSTREAM_SMTP_PASSWORD_FILE")"
    printf '%s' "$DRIFTSTREAM_SMTP_PASSWORD" > "$DRIFTSTREAM_SMTP_PASSWORD_FILE"
elif [ ! -r "$DRIFTSTREAM_SMTP_PASSWORD_FILE" ]; then
    missing="$missing DRIFTSTREAM_SMTP_PASSWORD"
fi

if [ -n "$missing" ]; then
    echo "alertmanager: set$missing (see docs/deployment.md)" >&2
    exit 1
fi
: "${DRIFTSTREAM_SMTP_FROM:=$DRIFTSTREAM_SMTP_USER}"
: "${DRIFTSTREAM_ALERT_EMAIL_TO:=$DRIFTSTREAM_SMTP_USER}"

# sed replacement text: escape the delimiter, '&' and backslashes
escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

sed \
    -e "s|\${DRIFTSTREAM_SMTP_HOST}|$(escape "$DRIFTSTREAM_SMTP_HOST")|g" \
    -e "s|\${DRIFTSTREAM_SMTP_USER}|$(escape "$DRIFTSTREAM_SMTP_USER")|g" \
    -e "s|\${DRIFTSTREAM_SMTP_FROM}|$(escape "$DRIFTSTREAM_SMTP_FROM")|g" \
    -e "s|\${DRIFTSTREAM_ALERT_EMAIL_TO}|$(escape "$DRIFTSTREAM_ALERT_EMAIL_TO")|g" \
    -e "s|\${DRIFTSTREAM_PAGER_WEBHOOK_URL}|$(escape "$DRIFTSTREAM_PAGER_WEBHOOK_URL")|g" \
    -e "s|\${DRIFTSTREAM_SMTP_PASSWORD_FILE}|$(escape "$DRIFTSTREAM_SMTP_PASSWORD_FILE")|g" \
    "$template" > "$out"

if grep -v '^ *#' "$out" | grep -q '\${DRIFTSTREAM_'; then
    echo "alertmanager: unfilled placeholder in $out" >&2
    exit 1
fi
exec "$@"
