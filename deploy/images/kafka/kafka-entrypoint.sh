#!/bin/bash
# Kafka image entry point: writes server.properties from the environment (into /tmp: the root filesystem may be
# read-only), formats /var/lib/kafka on first start, runs Kafka in the foreground (SIGTERM = clean shutdown).
#   kafka-entrypoint              run the broker
#   kafka-entrypoint healthcheck  exit 0 when the PLAINTEXT listener inside the container accepts connections
set -euo pipefail
DATA=/var/lib/kafka/data
CONF=/tmp/kafka
LISTENERS="${KAFKA_LISTENERS:-PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093}"
ADVERTISED="${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://kafka:9092}"
PROTOCOLS="${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:-PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT}"

if [ "${1:-}" = healthcheck ]; then
  port="${LISTENERS%%,*}"; port="${port##*:}"
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  exit 0
fi

mkdir -p "$DATA" "$CONF"
cat >"$CONF/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=$LISTENERS
advertised.listeners=$ADVERTISED
listener.security.protocol.map=$PROTOCOLS
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
PROPS
cat >"$CONF/log4j2.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders><Console name="stdout" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.server.BrokerServer" level="INFO"/>
  </Loggers>
</Configuration>
XML
JAVA_OPTS=(-Djava.io.tmpdir=/tmp -Djava.awt.headless=true -Dlog4j2.configurationFile="$CONF/log4j2.xml"
  -Dlog4j2.shutdownHookEnabled=false)
if [ ! -f "$DATA/meta.properties" ]; then
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | sed 's/^-/A/')"
  java "${JAVA_OPTS[@]}" -cp '/opt/kafka/libs/*' kafka.tools.StorageTool \
    format --cluster-id "$cluster_id" --config "$CONF/server.properties"
fi
# shellcheck disable=SC2086  # KAFKA_HEAP is a list of JVM options
exec java ${KAFKA_HEAP:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 "${JAVA_OPTS[@]}" \
  -cp '/opt/kafka/libs/*' kafka.Kafka "$CONF/server.properties"
