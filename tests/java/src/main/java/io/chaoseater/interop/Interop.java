package io.chaoseater.interop;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.UUID;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Another system on our topics, written against the contract alone: the {@code .avsc} files, Avro's
 * single-object encoding and the event-id recipe in the README. It publishes a RunRequested that the
 * orchestrator runs, then reads chaoseater.results and decodes every event on it.
 *
 * <pre>
 * Interop publish BROKERS PREFIX AVRO_DIR RUN_ID REGION[,REGION...]
 * Interop verify  BROKERS PREFIX AVRO_DIR RUN_ID REGION[,REGION...]
 * </pre>
 *
 * Exits 0 when every check holds, 1 naming the first that failed, 2 on bad arguments.
 */
public final class Interop {
  /** The namespace of every derived event id (UUID v5), as the contract fixes it. */
  private static final UUID EVENT_ID_NAMESPACE = UUID.fromString("6368616f-7365-6174-6572-2d6576656e74");

  private static final String TYPE_HEADER = "chaoseater.type";
  private static final String ID_HEADER = "chaoseater.id";
  private static final Duration DEADLINE = Duration.ofSeconds(180);

  private Interop() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 6 || !(args[0].equals("publish") || args[0].equals("verify"))) {
      System.err.println("usage: Interop publish|verify BROKERS PREFIX AVRO_DIR RUN_ID REGION[,REGION...]");
      System.exit(2);
    }
    String brokers = args[1];
    String prefix = args[2];
    Map<String, Schema> schemas = readSchemas(Path.of(args[3]));
    String runId = args[4];
    List<String> regions = Arrays.asList(args[5].split(","));
    try {
      if (args[0].equals("publish")) {
        publish(brokers, prefix + ".commands", schemas, runId, regions);
      } else {
        verify(brokers, prefix + ".results", schemas, runId, regions);
      }
    } catch (CheckFailed e) {
      System.err.println("check failed: " + e.getMessage());
      System.exit(1);
    }
  }

  /** A check that did not hold. */
  static final class CheckFailed extends Exception {
    private static final long serialVersionUID = 1L;

    CheckFailed(String message) {
      super(message);
    }
  }

  static void check(boolean holds, String what) throws CheckFailed {
    if (!holds) {
      throw new CheckFailed(what);
    }
  }

  /** Every schema in the folder, by record name; each file is parsed on its own, as a stranger would. */
  static Map<String, Schema> readSchemas(Path dir) throws IOException {
    Map<String, Schema> out = new TreeMap<>();
    try (DirectoryStream<Path> files = Files.newDirectoryStream(dir, "*.avsc")) {
      for (Path file : files) {
        Schema schema = new Schema.Parser().parse(file.toFile());
        out.put(schema.getName(), schema);
      }
    }
    if (out.isEmpty()) {
      throw new IOException("no .avsc files in " + dir);
    }
    return out;
  }

  /**
   * The contract's event id: UUID v5 (SHA-1) in the fixed namespace, of the event type and the parts
   * that identify the fact, each part preceded by a NUL byte.
   */
  static String eventId(String kind, String... parts) {
    MessageDigest sha1;
    try {
      sha1 = MessageDigest.getInstance("SHA-1");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
    ByteBuffer namespace = ByteBuffer.allocate(16);
    namespace.putLong(EVENT_ID_NAMESPACE.getMostSignificantBits());
    namespace.putLong(EVENT_ID_NAMESPACE.getLeastSignificantBits());
    sha1.update(namespace.array());
    sha1.update(kind.getBytes(StandardCharsets.UTF_8));
    for (String part : parts) {
      sha1.update((byte) 0);
      sha1.update(part.getBytes(StandardCharsets.UTF_8));
    }
    byte[] hash = sha1.digest();
    hash[6] = (byte) ((hash[6] & 0x0f) | 0x50);
    hash[8] = (byte) ((hash[8] & 0x3f) | 0x80);
    ByteBuffer bits = ByteBuffer.wrap(hash, 0, 16);
    return new UUID(bits.getLong(), bits.getLong()).toString();
  }

  static GenericData.EnumSymbol symbol(Schema schema, String field, String value) {
    return new GenericData.EnumSymbol(schema.getField(field).schema(), value);
  }

  /** A one-second network_latency run of 30 ms in parallel over the regions, as another system asks. */
  static GenericRecord runRequested(Schema schema, String runId, List<String> regions) {
    Schema specSchema = schema.getField("experiment").schema();
    Schema rollbackSchema = specSchema.getField("rollback").schema();
    GenericRecord rollback = new GenericData.Record(rollbackSchema);
    rollback.put("strategy", symbol(rollbackSchema, "strategy", "IMMEDIATE"));
    rollback.put("timeout_seconds", 60L);
    rollback.put("health_check_interval_s", 1.0);
    rollback.put("failure_threshold", 0.5);
    rollback.put("canary_percentage", 10.0);
    rollback.put("gradual_steps", 4);
    rollback.put("auto_pause_on_error", false);

    Map<String, Object> parameters = new LinkedHashMap<>();
    parameters.put("latency_ms", 30L);
    parameters.put("jitter_ms", 0L);
    GenericRecord spec = new GenericData.Record(specSchema);
    spec.put("name", "java-latency");
    spec.put("layer", symbol(specSchema, "layer", "INFRASTRUCTURE"));
    spec.put("fault_type", "network_latency");
    spec.put("parameters", parameters);
    spec.put("duration_ms", 1_000L);
    spec.put("rollback", rollback);
    spec.put("tags", Map.of("origin", "java-reference-client"));

    GenericRecord request = new GenericData.Record(schema);
    request.put("event_id", eventId("RunRequested", runId));
    request.put("occurred_at", Instant.now().toEpochMilli());
    request.put("run_id", runId);
    request.put("experiment", spec);
    request.put("regions", regions);
    request.put("mode", symbol(schema, "mode", "PARALLEL"));
    request.put("max_concurrent", regions.size());
    request.put("fail_fast", false);
    request.put("blast_radius_percent", 100.0);
    request.put("min_score", null);
    request.put("requested_by", "java-reference-client");
    return request;
  }

  static void publish(String brokers, String topic, Map<String, Schema> schemas, String runId, List<String> regions)
      throws Exception {
    Schema schema = schemas.get("RunRequested");
    GenericRecord request = runRequested(schema, runId, regions);
    byte[] payload = toArray(new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(request));

    Properties config = new Properties();
    config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    config.put(ProducerConfig.ACKS_CONFIG, "all");
    config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
    try (KafkaProducer<String, byte[]> producer =
        new KafkaProducer<>(config, new StringSerializer(), new ByteArraySerializer())) {
      ProducerRecord<String, byte[]> record = new ProducerRecord<>(topic, runId, payload);
      record.headers().add(TYPE_HEADER, "RunRequested".getBytes(StandardCharsets.UTF_8));
      record.headers().add(ID_HEADER, request.get("event_id").toString().getBytes(StandardCharsets.UTF_8));
      RecordMetadata at = producer.send(record).get();
      System.out.printf(
          "published RunRequested %s (%d bytes) to %s partition %d offset %d%n",
          runId, payload.length, at.topic(), at.partition(), at.offset());
    }
  }

  static byte[] toArray(ByteBuffer buffer) {
    byte[] out = new byte[buffer.remaining()];
    buffer.get(out);
    return out;
  }

  /** One decoder per writer schema, found by the fingerprint in the single-object header. */
  static final class Decoders {
    private final Map<Long, Schema> byFingerprint = new HashMap<>();
    private final Map<Long, BinaryMessageDecoder<GenericRecord>> decoders = new HashMap<>();

    Decoders(Map<String, Schema> schemas) {
      for (Schema schema : schemas.values()) {
        long fingerprint = SchemaNormalization.parsingFingerprint64(schema);
        byFingerprint.put(fingerprint, schema);
        decoders.put(fingerprint, new BinaryMessageDecoder<>(GenericData.get(), schema));
      }
    }

    GenericRecord decode(byte[] payload) throws CheckFailed, IOException {
      check(payload.length >= 10 && (payload[0] & 0xff) == 0xC3 && payload[1] == 0x01, "not single-object Avro");
      long fingerprint = ByteBuffer.wrap(payload, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
      BinaryMessageDecoder<GenericRecord> decoder = decoders.get(fingerprint);
      check(decoder != null, String.format("no .avsc has fingerprint %016x", fingerprint));
      return decoder.decode(payload);
    }
  }

  static String header(ConsumerRecord<String, byte[]> record, String key) {
    Header header = record.headers().lastHeader(key);
    return header == null || header.value() == null ? null : new String(header.value(), StandardCharsets.UTF_8);
  }

  static String text(GenericRecord record, String field) {
    Object value = record.get(field);
    return value == null ? null : value.toString();
  }

  static void verify(String brokers, String topic, Map<String, Schema> schemas, String runId, List<String> regions)
      throws Exception {
    Decoders decoders = new Decoders(schemas);
    Properties config = new Properties();
    config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    int decoded = 0;
    GenericRecord started = null;
    GenericRecord completed = null;
    Map<String, GenericRecord> results = new TreeMap<>();
    Instant deadline = Instant.now().plus(DEADLINE);
    try (KafkaConsumer<String, byte[]> consumer =
        new KafkaConsumer<>(config, new StringDeserializer(), new ByteArrayDeserializer())) {
      List<TopicPartition> partitions = new ArrayList<>();
      for (PartitionInfo p : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
        partitions.add(new TopicPartition(topic, p.partition()));
      }
      check(!partitions.isEmpty(), "no partitions for " + topic);
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      while (completed == null) {
        check(Instant.now().isBefore(deadline), "no RunCompleted for " + runId + " within " + DEADLINE);
        for (ConsumerRecord<String, byte[]> record : consumer.poll(Duration.ofMillis(500))) {
          String where = record.topic() + "/" + record.partition() + "@" + record.offset();
          GenericRecord event = decoders.decode(record.value());
          decoded++;
          String type = event.getSchema().getName();
          String eventId = text(event, "event_id");
          check(type.equals(header(record, TYPE_HEADER)), where + ": header " + TYPE_HEADER + " is not " + type);
          check(eventId.equals(header(record, ID_HEADER)), where + ": header " + ID_HEADER + " is not the event id");
          if (!runId.equals(text(event, "run_id"))) {
            continue;
          }
          check(runId.equals(record.key()), where + ": key " + record.key() + " is not the run id");
          switch (type) {
            case "RunStarted" -> {
              check(started == null, where + ": a second RunStarted");
              check(eventId.equals(eventId("RunStarted", runId)), where + ": RunStarted id is not derived");
              started = event;
            }
            case "RegionResult" -> {
              String region = text(event, "region");
              String dispatch = text(event, "dispatch_id");
              check(dispatch.equals(runId + "." + region), where + ": dispatch id " + dispatch);
              check(eventId.equals(eventId("RegionResult", dispatch)), where + ": RegionResult id is not derived");
              check(results.put(region, event) == null, where + ": a second RegionResult for " + region);
            }
            case "RunCompleted" -> {
              check(eventId.equals(eventId("RunCompleted", runId)), where + ": RunCompleted id is not derived");
              completed = event;
            }
            default -> throw new CheckFailed(where + ": unexpected " + type + " for the run: " + event);
          }
        }
      }
    }
    check(started != null, "no RunStarted before RunCompleted");
    List<String> startedRegions = new ArrayList<>();
    for (Object region : (List<?>) started.get("regions")) {
      startedRegions.add(region.toString());
    }
    check(startedRegions.equals(regions), "RunStarted regions " + startedRegions + ", asked " + regions);
    check("java-latency".equals(text(started, "experiment_name")), "RunStarted experiment_name");
    check(results.keySet().equals(new java.util.TreeSet<>(regions)), "results for " + results.keySet());
    for (GenericRecord result : results.values()) {
      check("COMPLETED".equals(text(result, "status")), "region status " + text(result, "status"));
      check("network_latency".equals(text(result, "fault_type")), "fault_type " + text(result, "fault_type"));
      Object score = result.get("resilience_score");
      check(score instanceof Double s && s >= 0 && s <= 100, "resilience_score " + score);
      GenericRecord metrics = (GenericRecord) result.get("metrics");
      check(metrics != null && (Long) metrics.get("requests_total") > 0, "metrics measured no requests");
      check((Long) result.get("finished_at") >= (Long) result.get("started_at"), "finished before it started");
    }
    check("COMPLETED".equals(text(completed, "status")), "run status " + text(completed, "status"));
    GenericRecord report = (GenericRecord) completed.get("report");
    check((Integer) report.get("regions_total") == regions.size(), "regions_total " + report.get("regions_total"));
    check((Integer) report.get("regions_succeeded") == regions.size(), "regions_succeeded");
    System.out.printf(
        "decoded %d events on %s with Avro's BinaryMessageDecoder; run %s: RunStarted, %d RegionResult, "
            + "RunCompleted %s (mean score %.1f); every id is the contract's UUID v5%n",
        decoded, topic, runId, results.size(), text(completed, "status"), (Double) report.get("mean_score"));
  }
}
