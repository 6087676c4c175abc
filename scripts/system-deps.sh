#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only those missing: the brokers that come as
# Debian packages, socat for TLS fronts, Chromium for the browser tests, PostgreSQL for migrations,
# curl and openssl for the documented service commands, the Debian programs the agent's tests run,
# and promtool (package prometheus) for the alert rules.
set -euo pipefail
need=()
command -v rabbitmq-server >/dev/null || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_passwd >/dev/null || need+=(mosquitto-clients)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v socat >/dev/null || need+=(socat)
command -v chromium >/dev/null || need+=(chromium)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v openssl >/dev/null || need+=(openssl)
command -v slapd >/dev/null || [ -x /usr/sbin/slapd ] || need+=(slapd)   # tests/auth: LDAP sign-in
command -v ldapmodify >/dev/null || need+=(ldap-utils)
command -v node >/dev/null || need+=(nodejs)           # tests/auth: oidc-provider (npm) runs on node
command -v npm >/dev/null || need+=(npm)
command -v promtool >/dev/null || need+=(prometheus)    # only its promtool: tests/deploy (alert rules)
command -v curl >/dev/null || need+=(curl)              # docs/connecting-a-service.md, run by tests/clients
# programs no one here wrote, run unmodified under console-agent by tests/clients/agent
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v kafkacat >/dev/null || command -v kcat >/dev/null || need+=(kafkacat)
command -v amqp-consume >/dev/null || need+=(amqp-tools)
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
