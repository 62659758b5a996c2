package dev.strand.it;

import static dev.strand.it.Clients.TIMEOUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Consumer groups of KafkaConsumers against Strand's coordinator: a group of three with the range
 * (eager) and cooperative-sticky assignors while a member joins and another leaves (a partition is
 * never owned by two members, every partition is owned after each rebalance, no acknowledged record
 * is missed), and static membership (KIP-345): a member restarted with its group.instance.id within
 * the session timeout gets its partitions back and the others see no rebalance; one that stays
 * away longer is removed; a second member with the same instance id fences the first.
 */
class ConsumerGroupTest {
    static final int PARTITIONS = 6;
    static StrandBroker broker;

    final Map<TopicPartition, String> owners = new ConcurrentHashMap<>();
    final List<String> violations = java.util.Collections.synchronizedList(new ArrayList<>());
    final List<GroupMember> members = new ArrayList<>();

    @BeforeAll
    static void start() throws Exception {
        broker = StrandBroker.start("group.initial.rebalance.delay.ms=0");
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    @AfterEach
    void closeMembers() throws InterruptedException {
        for (GroupMember m : members) {
            m.close();
        }
    }

    private GroupMember member(String name, String group, String topic, Object... props) {
        GroupMember m = GroupMember.start(broker, name, group, topic, owners, violations, props);
        members.add(m);
        return m;
    }

    /**
     * Waits until exactly these members own the topic's partitions between them, each at least
     * one, each partition once, all in one generation; returns that generation.
     */
    private int awaitBalanced(String topic, List<GroupMember> group) throws InterruptedException {
        Set<TopicPartition> all = new HashSet<>();
        for (int p = 0; p < PARTITIONS; p++) {
            all.add(new TopicPartition(topic, p));
        }
        Clients.waitFor(() -> {
            Set<TopicPartition> union = new HashSet<>();
            int total = 0;
            for (GroupMember m : group) {
                Set<TopicPartition> mine = m.ownedNow();
                if (mine.isEmpty() || m.failure != null) {
                    return false;
                }
                union.addAll(mine);
                total += mine.size();
            }
            Set<Integer> generations = group.stream().map(m -> m.generation).collect(Collectors.toSet());
            return union.equals(all) && total == PARTITIONS && generations.size() == 1;
        }, TIMEOUT, () -> "not balanced: " + group.stream().map(m -> m.name + "(gen " + m.generation + ", failure "
                + m.failure + ")=" + m.ownedNow()).toList() + " violations " + violations);
        assertEquals(List.of(), violations);
        return group.get(0).generation;
    }

    /** Produces keyed records on a thread until stopped; keeps what the broker acknowledged. */
    static final class BackgroundProducer implements AutoCloseable {
        final Set<String> acked = ConcurrentHashMap.newKeySet();
        private final Thread thread;
        private volatile boolean running = true;
        private volatile Throwable failure;

        BackgroundProducer(String topic) {
            thread = new Thread(() -> {
                try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
                    for (int i = 0; running; i++) {
                        String value = "v" + i;
                        producer.send(new ProducerRecord<>(topic, "k" + i, value), (md, e) -> {
                            if (e == null) {
                                acked.add(position(md.partition(), md.offset()));
                            } else {
                                failure = e;
                            }
                        });
                        Thread.sleep(3);
                    }
                } catch (Throwable t) {
                    failure = t;
                }
            }, "producer");
            thread.start();
        }

        static String position(int partition, long offset) {
            return partition + "@" + offset;
        }

        @Override
        public void close() throws InterruptedException {
            running = false;
            thread.join(TIMEOUT.toMillis());
            assertNull(failure, "producer failed");
        }
    }

    @ParameterizedTest
    @ValueSource(classes = {RangeAssignor.class, CooperativeStickyAssignor.class})
    void membersJoinAndLeaveWithoutSharingOrLosingPartitions(Class<?> assignor) throws Exception {
        String topic = Clients.uniqueTopic("group-" + assignor.getSimpleName());
        String group = Clients.uniqueTopic("g");
        Clients.createTopic(broker, topic, PARTITIONS);
        Object[] props = {ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor.getName()};
        BackgroundProducer producer = new BackgroundProducer(topic);
        try {
            GroupMember a = member("a", group, topic, props);
            GroupMember b = member("b", group, topic, props);
            GroupMember c = member("c", group, topic, props);
            int first = awaitBalanced(topic, List.of(a, b, c));
            GroupMember d = member("d", group, topic, props);
            int joined = awaitBalanced(topic, List.of(a, b, c, d));
            assertTrue(joined > first, "no rebalance for the new member");
            b.close();
            int left = awaitBalanced(topic, List.of(a, c, d));
            assertTrue(left > joined, "no rebalance after the member left");
            // Enough records for every partition to have been read across the rebalances.
            Clients.waitFor(() -> producer.acked.size() >= 300, TIMEOUT, () -> producer.acked.size() + " records acknowledged");
        } finally {
            producer.close();
        }
        // Every acknowledged record was consumed by some member.
        Clients.waitFor(() -> missing(producer.acked).isEmpty(), TIMEOUT, () -> "not consumed: " + missing(producer.acked));
        assertEquals(List.of(), violations);
        for (GroupMember m : members) {
            assertNull(m.failure, m.name);
        }
    }

    /** Acknowledged positions no member consumed. */
    private Set<String> missing(Set<String> acked) {
        Set<String> left = new HashSet<>(acked);
        for (GroupMember m : members) {
            synchronized (m.consumed) {
                m.consumed.forEach(r -> left.remove(BackgroundProducer.position(r.partition(), r.offset())));
            }
        }
        return left;
    }

    private GroupMember staticMember(String name, String group, String topic) {
        return member(name, group, topic, ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-" + name);
    }

    /** What a member's listener saw so far: a rebalance always calls onPartitionsAssigned. */
    private static String rebalanceTrace(GroupMember m) {
        return m.name + ": generation " + m.generation + ", assigned " + m.assignedCalls.get() + ", revoked "
                + m.revokedCalls.get() + ", lost " + m.lostCalls.get() + ", owns " + m.ownedNow();
    }

    /**
     * Closes a static member (it stays in the group) and starts it again with the same instance
     * id: it must get its partitions back in the same generation while the others' listeners see
     * nothing. Returns the new member.
     */
    private GroupMember restartStatic(GroupMember old, String group, String topic, List<GroupMember> others) throws Exception {
        Set<TopicPartition> before = old.ownedNow();
        int generation = old.generation;
        List<String> othersBefore = others.stream().map(ConsumerGroupTest::rebalanceTrace).toList();
        old.close();
        GroupMember back = staticMember(old.name, group, topic);
        Clients.waitFor(() -> back.ownedNow().equals(before) && back.generation == generation, TIMEOUT,
                () -> "restarted " + rebalanceTrace(back) + ", expected " + before + " in generation " + generation);
        // Several heartbeats (500 ms) later still nobody has rebalanced.
        Thread.sleep(2000);
        assertEquals(othersBefore, others.stream().map(ConsumerGroupTest::rebalanceTrace).toList());
        assertEquals(1, back.assignedCalls.get(), rebalanceTrace(back));
        assertEquals(before, back.ownedNow());
        assertEquals(List.of(), violations);
        return back;
    }

    @Test
    void staticMemberRestartedWithinTheSessionTimeoutKeepsItsPartitions() throws Exception {
        String topic = Clients.uniqueTopic("static");
        String group = Clients.uniqueTopic("g");
        Clients.createTopic(broker, topic, PARTITIONS);
        // a joins first and leads the group.
        GroupMember a = staticMember("a", group, topic);
        awaitBalanced(topic, List.of(a));
        GroupMember b = staticMember("b", group, topic);
        GroupMember c = staticMember("c", group, topic);
        awaitBalanced(topic, List.of(a, b, c));
        GroupMember c2 = restartStatic(c, group, topic, List.of(a, b));
        GroupMember a2 = restartStatic(a, group, topic, List.of(b, c2));
        try (Admin admin = Clients.admin(broker)) {
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all()
                    .get(TIMEOUT.toSeconds(), TimeUnit.SECONDS).get(group);
            assertEquals(GroupState.STABLE, d.groupState());
            assertEquals(Set.of("instance-a", "instance-b", "instance-c"),
                    d.members().stream().map(m -> m.groupInstanceId().orElse("?")).collect(Collectors.toSet()));
            assertEquals(Set.of(a2.memberId, b.memberId, c2.memberId),
                    d.members().stream().map(MemberDescription::consumerId).collect(Collectors.toSet()));
        }
    }

    @Test
    void staticMemberAwayLongerThanTheSessionTimeoutIsReplaced() throws Exception {
        String topic = Clients.uniqueTopic("static-gone");
        String group = Clients.uniqueTopic("g");
        Clients.createTopic(broker, topic, PARTITIONS);
        GroupMember a = staticMember("a", group, topic);
        GroupMember b = staticMember("b", group, topic);
        int generation = awaitBalanced(topic, List.of(a, b));
        long closedAt = System.nanoTime();
        b.close();
        int after = awaitBalanced(topic, List.of(a));
        long tookMs = (System.nanoTime() - closedAt) / 1_000_000;
        assertTrue(after > generation, "no rebalance");
        // Not before the session (6 s) expired: a static member's close does not leave the group.
        assertTrue(tookMs >= 5000, "rebalanced after " + tookMs + " ms");
        assertEquals(PARTITIONS, a.ownedNow().size());
    }

    @Test
    void secondMemberWithTheSameInstanceIdFencesTheFirst() throws Exception {
        String topic = Clients.uniqueTopic("static-fence");
        String group = Clients.uniqueTopic("g");
        Clients.createTopic(broker, topic, PARTITIONS);
        GroupMember first = staticMember("a", group, topic);
        awaitBalanced(topic, List.of(first));
        GroupMember second = staticMember("a", group, topic);
        Clients.waitFor(() -> first.failure != null, TIMEOUT, () -> "first member still running: " + rebalanceTrace(first));
        assertTrue(first.failure instanceof org.apache.kafka.common.errors.FencedInstanceIdException, "first failed with " + first.failure);
        Clients.waitFor(() -> second.ownedNow().size() == PARTITIONS, TIMEOUT, () -> rebalanceTrace(second));
        assertNull(second.failure);
    }
}
