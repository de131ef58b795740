// Publishes payment transactions to streamml and reads its predictions back, from Java, with
// only Kafka's client, Apache Avro, the topic names of docs/asyncapi.yaml and schemas/*.avsc.
//
//   java -cp "$(cat classpath.txt)" Integrate.java publish <bootstrap> <schemas dir> <n> <prefix>
//   java -cp "$(cat classpath.txt)" Integrate.java read <bootstrap> <schemas dir> <prefix> <n>
//
// `publish` sends n transactions with event ids <prefix>-0 .. <prefix>-(n-1); `read` prints
// one JSON line per prediction whose event id starts with <prefix>, until it has n of them.
// Every topic carries Avro single-object encoding: Avro's BinaryMessageEncoder writes it (C3 01,
// the schema's CRC-64-AVRO fingerprint, the body) and BinaryMessageDecoder reads it.

import java.io.File;
import java.io.IOException;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import org.apache.avro.Schema;
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
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Integrate {
    static final String TRANSACTIONS = "payments.transactions"; // key: card_id
    static final String PREDICTIONS = "payments.predictions"; // key: card_id

    public static void main(String[] args) throws Exception {
        String bootstrap = args[1];
        File schemas = new File(args[2]);
        if (args[0].equals("publish")) {
            publish(bootstrap, schema(schemas, TRANSACTIONS), Integer.parseInt(args[3]), args[4]);
        } else {
            read(bootstrap, schema(schemas, PREDICTIONS), args[3], Integer.parseInt(args[4]));
        }
    }

    static Schema schema(File schemas, String topic) throws IOException {
        return new Schema.Parser().parse(new File(schemas, topic + ".avsc"));
    }

    static void publish(String bootstrap, Schema schema, int n, String prefix) throws Exception {
        BinaryMessageEncoder<GenericRecord> encoder =
                new BinaryMessageEncoder<>(GenericData.get(), schema);
        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        long now = System.currentTimeMillis();
        try (KafkaProducer<String, byte[]> producer =
                new KafkaProducer<>(config, new StringSerializer(), new ByteArraySerializer())) {
            for (int i = 0; i < n; i++) {
                GenericRecord event = new GenericData.Record(schema);
                String card = "java-card-" + (i % 7);
                event.put("event_id", prefix + "-" + i);
                event.put("card_id", card);
                event.put("merchant_id", "java-merchant-" + (i % 3));
                event.put("amount", 10.0 + i);
                event.put("currency", "EUR");
                event.put("event_time", now + i);
                byte[] value = encoder.encode(event).array();
                producer.send(new ProducerRecord<>(TRANSACTIONS, card, value)).get();
            }
        }
        System.err.println("published " + n + " transactions to " + TRANSACTIONS);
    }

    static void read(String bootstrap, Schema schema, String prefix, int n) throws Exception {
        BinaryMessageDecoder<GenericRecord> decoder =
                new BinaryMessageDecoder<>(GenericData.get(), schema);
        Properties config = new Properties();
        config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ConsumerConfig.GROUP_ID_CONFIG, "java-reader-" + prefix);
        config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // Predictions are published in Kafka transactions: read only committed ones.
        config.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        Set<String> seen = new HashSet<>();
        long deadline = System.currentTimeMillis() + 120_000;
        try (KafkaConsumer<String, byte[]> consumer =
                new KafkaConsumer<>(config, new StringDeserializer(), new ByteArrayDeserializer())) {
            consumer.subscribe(List.of(PREDICTIONS));
            while (seen.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                    GenericRecord prediction = decoder.decode(record.value());
                    String eventId = prediction.get("event_id").toString();
                    if (eventId.startsWith(prefix + "-") && seen.add(eventId)) {
                        System.out.printf(
                                "{\"event_id\": \"%s\", \"score\": %s, \"decision\": %s, "
                                        + "\"model_version\": \"%s\", \"served_by\": \"%s\"}%n",
                                eventId,
                                prediction.get("score"),
                                prediction.get("decision"),
                                prediction.get("model_version"),
                                prediction.get("served_by"));
                    }
                }
            }
        }
        System.err.println("read " + seen.size() + " of " + n + " predictions");
        System.exit(seen.size() == n ? 0 : 1);
    }
}
