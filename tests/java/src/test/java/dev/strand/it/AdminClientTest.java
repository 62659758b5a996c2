package dev.strand.it;

import static dev.strand.it.Clients.TIMEOUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.OffsetOutOfRangeException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * AdminClient against Strand: topics (create, describe, list, delete and their errors), topic
 * and broker configs with incremental alters, partitions added, records deleted, list offsets
 * (earliest, latest, max timestamp, by time), consumer groups (list, describe, offsets listed /
 * altered / deleted, group deleted), the cluster and its log dirs.
 */
class AdminClientTest {
    static StrandBroker broker;
    static Admin admin;

    @BeforeAll
    static void start() throws Exception {
        broker = StrandBroker.start("group.initial.rebalance.delay.ms=0");
        admin = Clients.admin(broker);
    }

    @AfterAll
    static void stop() throws Exception {
        if (admin != null) {
            admin.close();
        }
        broker.close();
    }

    private static <T> T get(KafkaFuture<T> f) throws Exception {
        return f.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
    }

    /** The cause of a failed future, which must be of this type. */
    private static <E extends Throwable> E failure(Class<E> type, KafkaFuture<?> f) {
        ExecutionException e = assertThrows(ExecutionException.class, () -> f.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS));
        return assertInstanceOf(type, e.getCause());
    }

    private static void produce(String topic, int partition, int n, long firstTimestamp, Object... producerProps) throws Exception {
        try (KafkaProducer<String, String> producer = Clients.producer(broker, producerProps)) {
            Clients.sendAll(producer, IntStream.range(0, n)
                    .mapToObj(i -> new ProducerRecord<>(topic, partition, firstTimestamp + i * 1000L, "k" + i, "v" + i)).toList());
        }
    }

    @Test
    void createDescribeListAndDeleteTopics() throws Exception {
        String topic = Clients.uniqueTopic("admin-topic");
        get(admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1).configs(Map.of("retention.ms", "123456")))).all());
        TopicDescription d = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
        assertEquals(3, d.partitions().size());
        assertFalse(d.isInternal());
        assertTrue(d.topicId() != null && !d.topicId().equals(Uuid.ZERO_UUID), "topic id " + d.topicId());
        for (TopicPartitionInfo p : d.partitions()) {
            assertEquals(1, p.leader().id());
            assertEquals(List.of(p.leader()), p.replicas());
            assertEquals(List.of(p.leader()), p.isr());
        }
        // Described by id too.
        assertEquals(topic, get(admin.describeTopics(org.apache.kafka.common.TopicCollection.ofTopicIds(List.of(d.topicId())))
                .allTopicIds()).get(d.topicId()).name());
        assertTrue(get(admin.listTopics().names()).contains(topic));

        failure(TopicExistsException.class, admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        failure(InvalidReplicationFactorException.class, admin.createTopics(List.of(new NewTopic(topic + "-rf3", 1, (short) 3))).all());
        failure(InvalidPartitionsException.class, admin.createTopics(List.of(new NewTopic(topic + "-p0", 0, (short) 1))).all());
        failure(InvalidConfigurationException.class, admin.createTopics(List.of(
                new NewTopic(topic + "-badcfg", 1, (short) 1).configs(Map.of("no.such.config", "1")))).all());
        // validateOnly creates nothing.
        get(admin.createTopics(List.of(new NewTopic(topic + "-dry", 2, (short) 1)), new CreateTopicsOptions().validateOnly(true)).all());
        Set<String> names = get(admin.listTopics().names());
        assertFalse(names.contains(topic + "-dry") || names.contains(topic + "-rf3") || names.contains(topic + "-badcfg"), names.toString());

        get(admin.deleteTopics(List.of(topic)).all());
        Clients.waitFor(() -> {
            try {
                return !get(admin.listTopics().names()).contains(topic);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, TIMEOUT, () -> "topic still listed");
        failure(UnknownTopicOrPartitionException.class, admin.describeTopics(List.of(topic)).allTopicNames());
        failure(UnknownTopicOrPartitionException.class, admin.deleteTopics(List.of(topic)).all());
    }

    private static Config topicConfig(String topic) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return get(admin.describeConfigs(List.of(r)).all()).get(r);
    }

    private static void alter(String topic, AlterConfigOp... ops) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        get(admin.incrementalAlterConfigs(Map.of(r, List.of(ops))).all());
    }

    @Test
    void describeAndIncrementallyAlterConfigs() throws Exception {
        String topic = Clients.uniqueTopic("admin-config");
        Clients.createTopic(broker, topic, 1, Map.of("retention.ms", "123456"));
        Config c = topicConfig(topic);
        assertEquals("123456", c.get("retention.ms").value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("retention.ms").source());
        assertEquals("delete", c.get("cleanup.policy").value());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, c.get("cleanup.policy").source());
        assertEquals(ConfigEntry.ConfigType.LONG, c.get("retention.ms").type());

        alter(topic, new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE),
                new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND));
        c = topicConfig(topic);
        assertEquals("2000", c.get("max.message.bytes").value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("max.message.bytes").source());
        assertEquals(String.valueOf(7 * 24 * 3600 * 1000L), c.get("retention.ms").value());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, c.get("retention.ms").source());
        assertEquals("delete,compact", c.get("cleanup.policy").value());

        alter(topic, new AlterConfigOp(new ConfigEntry("cleanup.policy", "delete"), AlterConfigOp.OpType.SUBTRACT));
        assertEquals("compact", topicConfig(topic).get("cleanup.policy").value());

        // The new max.message.bytes is enforced at once.
        try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> producer.send(new ProducerRecord<>(topic, "k", "x".repeat(5000))).get(TIMEOUT.toSeconds(), TimeUnit.SECONDS));
            assertInstanceOf(org.apache.kafka.common.errors.RecordTooLargeException.class, e.getCause());
        }

        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        failure(InvalidConfigurationException.class, admin.incrementalAlterConfigs(Map.of(r, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "soon"), AlterConfigOp.OpType.SET)))).all());
        failure(InvalidConfigurationException.class, admin.incrementalAlterConfigs(Map.of(r, List.of(
                new AlterConfigOp(new ConfigEntry("no.such.config", "1"), AlterConfigOp.OpType.SET)))).all());

        ConfigResource brokerResource = new ConfigResource(ConfigResource.Type.BROKER, "1");
        Config brokerConfig = get(admin.describeConfigs(List.of(brokerResource)).all()).get(brokerResource);
        assertEquals("1", brokerConfig.get("num.partitions").value());
    }

    @Test
    void createPartitionsGrowsATopic() throws Exception {
        String topic = Clients.uniqueTopic("admin-partitions");
        Clients.createTopic(broker, topic, 2);
        get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all());
        assertEquals(5, get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic).partitions().size());
        failure(InvalidPartitionsException.class, admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all());
        failure(InvalidPartitionsException.class, admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all());
        failure(UnknownTopicOrPartitionException.class,
                admin.createPartitions(Map.of(topic + "-missing", NewPartitions.increaseTo(5))).all());
        // The new partitions take records.
        produce(topic, 4, 3, System.currentTimeMillis());
        TopicPartition p4 = new TopicPartition(topic, 4);
        assertEquals(3, get(admin.listOffsets(Map.of(p4, OffsetSpec.latest())).all()).get(p4).offset());
    }

    @Test
    void deleteRecordsMovesTheLogStart() throws Exception {
        String topic = Clients.uniqueTopic("admin-delete-records");
        Clients.createTopic(broker, topic, 1);
        produce(topic, 0, 10, System.currentTimeMillis());
        TopicPartition tp = new TopicPartition(topic, 0);
        assertEquals(4, get(admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(4))).lowWatermarks().get(tp)).lowWatermark());
        assertEquals(4, get(admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).all()).get(tp).offset());
        try (KafkaConsumer<String, String> c = Clients.consumer(broker)) {
            assertEquals(Map.of(tp, 4L), c.beginningOffsets(List.of(tp)));
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            assertEquals("v4", Clients.pollCount(c, 1).get(0).value());
        }
        // -1: up to the high watermark.
        assertEquals(10, get(admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(-1))).lowWatermarks().get(tp)).lowWatermark());
        failure(OffsetOutOfRangeException.class, admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(11))).all());
    }

    @ParameterizedTest
    @ValueSource(strings = {"none", "zstd"})
    void listOffsetsBySpec(String codec) throws Exception {
        String topic = Clients.uniqueTopic("admin-offsets-" + codec);
        Clients.createTopic(broker, topic, 1);
        long base = System.currentTimeMillis() - 600_000;
        // Timestamps base, +1s, ..., +4s in one batch, then one older record: the maximum is
        // at offset 4, inside the batch.
        produce(topic, 0, 5, base, ProducerConfig.COMPRESSION_TYPE_CONFIG, codec, ProducerConfig.LINGER_MS_CONFIG, 100);
        try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
            producer.send(new ProducerRecord<>(topic, 0, base - 5000, "old", "old")).get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        assertOffset(tp, OffsetSpec.earliest(), 0, -1);
        assertOffset(tp, OffsetSpec.latest(), 6, -1);
        assertOffset(tp, OffsetSpec.maxTimestamp(), 4, base + 4000);
        assertOffset(tp, OffsetSpec.forTimestamp(base + 1500), 2, base + 2000);
        assertOffset(tp, OffsetSpec.forTimestamp(base - 10_000), 0, base);
        // After the last timestamp: no offset (-1).
        assertOffset(tp, OffsetSpec.forTimestamp(base + 4001), -1, -1);
    }

    private static void assertOffset(TopicPartition tp, OffsetSpec spec, long offset, long timestamp) throws Exception {
        ListOffsetsResultInfo info = get(admin.listOffsets(Map.of(tp, spec)).partitionResult(tp));
        assertEquals(offset, info.offset(), spec.getClass().getSimpleName() + ": " + info);
        assertEquals(timestamp, info.timestamp(), spec.getClass().getSimpleName() + ": " + info);
    }

    @Test
    void consumerGroupsListedDescribedAlteredAndDeleted() throws Exception {
        String topic = Clients.uniqueTopic("admin-group");
        String group = Clients.uniqueTopic("admin-g");
        Clients.createTopic(broker, topic, 2);
        produce(topic, 0, 5, System.currentTimeMillis());
        produce(topic, 1, 3, System.currentTimeMillis());
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.CLIENT_ID_CONFIG, "admin-test-client")) {
            c.subscribe(List.of(topic));
            Clients.pollCount(c, 8);
            c.commitSync();

            Collection<GroupListing> listed = get(admin.listGroups().all());
            GroupListing mine = listed.stream().filter(g -> g.groupId().equals(group)).findFirst().orElseThrow();
            assertEquals(java.util.Optional.of(GroupState.STABLE), mine.groupState());
            assertEquals("consumer", mine.protocol());

            ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
            assertEquals(GroupState.STABLE, d.groupState());
            assertEquals("range", d.partitionAssignor());
            assertEquals(1, d.members().size());
            assertEquals("admin-test-client", d.members().iterator().next().clientId());
            assertEquals(Set.of(p0, p1), d.members().iterator().next().assignment().topicPartitions());
            assertEquals(1, d.coordinator().id());

            failure(GroupNotEmptyException.class, admin.deleteConsumerGroups(List.of(group)).all());
        }
        Map<TopicPartition, OffsetAndMetadata> offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        assertEquals(5, offsets.get(p0).offset());
        assertEquals(3, offsets.get(p1).offset());
        Clients.waitFor(() -> describeState(group) == GroupState.EMPTY, TIMEOUT, () -> "group not empty after close");

        get(admin.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(1, "moved"))).all());
        offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        assertEquals(1, offsets.get(p0).offset());
        assertEquals("moved", offsets.get(p0).metadata());
        get(admin.deleteConsumerGroupOffsets(group, Set.of(p1)).all());
        assertEquals(Set.of(p0), get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata()).keySet());
        // A member of the group resumes at the altered offset.
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            c.assign(List.of(p0));
            assertEquals("v1", Clients.pollCount(c, 1).get(0).value());
        }

        get(admin.deleteConsumerGroups(List.of(group)).all());
        assertFalse(get(admin.listGroups().all()).stream().map(GroupListing::groupId).collect(Collectors.toSet()).contains(group));
        assertEquals(Map.of(), get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata()));
        // A group that is gone (or never was) is not found, as Kafka 4.x says it.
        GroupIdNotFoundException e = failure(GroupIdNotFoundException.class, admin.describeConsumerGroups(List.of(group)).all());
        assertEquals("Group " + group + " not found.", e.getMessage());
        failure(GroupIdNotFoundException.class, admin.deleteConsumerGroups(List.of(group)).all());
    }

    private static GroupState describeState(String group) {
        try {
            return get(admin.describeConsumerGroups(List.of(group)).all()).get(group).groupState();
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    @Test
    void describeClusterAndLogDirs() throws Exception {
        DescribeClusterResult cluster = admin.describeCluster();
        assertEquals(1, get(cluster.nodes()).size());
        assertEquals(1, get(cluster.controller()).id());
        assertEquals("127.0.0.1", get(cluster.nodes()).iterator().next().host());
        assertEquals(broker.port(), get(cluster.nodes()).iterator().next().port());
        assertFalse(get(cluster.clusterId()).isEmpty());

        String topic = Clients.uniqueTopic("admin-logdirs");
        Clients.createTopic(broker, topic, 2);
        produce(topic, 1, 20, System.currentTimeMillis());
        Map<String, LogDirDescription> dirs = get(admin.describeLogDirs(List.of(1)).allDescriptions()).get(1);
        assertEquals(1, dirs.size());
        LogDirDescription dir = dirs.values().iterator().next();
        assertEquals(null, dir.error());
        assertTrue(dir.replicaInfos().containsKey(new TopicPartition(topic, 0)));
        assertEquals(0, dir.replicaInfos().get(new TopicPartition(topic, 0)).size());
        assertTrue(dir.replicaInfos().get(new TopicPartition(topic, 1)).size() > 20 * 10,
                "size " + dir.replicaInfos().get(new TopicPartition(topic, 1)).size());
        assertTrue(dir.totalBytes().orElse(0) > 0 && dir.usableBytes().orElse(-1) >= 0, dir.toString());
    }
}
