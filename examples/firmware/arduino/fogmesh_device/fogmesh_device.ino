// fogmesh device firmware for an ESP32 (Arduino core) with PubSubClient and
// ArduinoJson 7: the same contract as examples/firmware/micropython/main.py.
// - a temperature reading every EVERY_MS on {root}/sensors/{device}/temperature
// - a task with each reading on {root}/tasks/{device}; without a reply on
//   {root}/replies/{device} within REPLY_TIMEOUT_MS it is published again under
//   the same id ("attempt": 2, 3...): agents answer a repeated id once
// - a relay on RELAY_PIN driven from {root}/actuators/{device}/relay/set
//   (on, off, toggle, {"op":"pulse","ms":N}); its state retained on .../state
// Not compiled by fogmesh's tests (no Arduino toolchain there); the MicroPython
// version of the same firmware runs in tests/test_firmware.py.
#include <WiFi.h>
#include <PubSubClient.h>
#include <ArduinoJson.h>

const char *WIFI_SSID = "your-ssid";
const char *WIFI_PASSWORD = "your-password";
const char *BROKER = "192.168.1.10";
const uint16_t PORT = 1883;
const char *DEVICE = "esp32-7";
const char *ROOT = "fog/v1";
const uint32_t EVERY_MS = 10000;
const uint32_t REPLY_TIMEOUT_MS = 5000;
const int TRIES = 12;
const int RELAY_PIN = 5;

WiFiClient net;
PubSubClient mqtt(net);
char replies[96], commands[96], tasks[96], sensor[96], relayState[96];
char bootId[9];
uint32_t seq = 0;
char pendingId[64] = "";
bool answered = false;
char answer[512];

void publishRelayState() {
  JsonDocument doc;
  doc["state"] = digitalRead(RELAY_PIN) ? "on" : "off";
  doc["device"] = DEVICE;
  doc["actuator"] = "relay";
  char buf[160];
  size_t n = serializeJson(doc, buf);
  mqtt.publish(relayState, (const uint8_t *)buf, n, true);
}

void onMessage(char *topic, byte *payload, unsigned int length) {
  if (strcmp(topic, replies) == 0) {
    JsonDocument doc;
    if (deserializeJson(doc, payload, length)) return;
    if (strcmp(doc["id"] | "", pendingId) == 0) {
      answered = true;
      size_t n = length < sizeof(answer) - 1 ? length : sizeof(answer) - 1;
      memcpy(answer, payload, n);
      answer[n] = 0;
    }
    return;
  }
  // {root}/actuators/{device}/relay/set
  String op((const char *)payload, length);
  op.trim();
  uint32_t ms = 0;
  if (op.startsWith("{")) {
    JsonDocument doc;
    if (deserializeJson(doc, payload, length)) return;
    op = String(doc["op"] | "");
    ms = doc["ms"] | 0;
  }
  if (op == "on") digitalWrite(RELAY_PIN, HIGH);
  else if (op == "off") digitalWrite(RELAY_PIN, LOW);
  else if (op == "toggle") digitalWrite(RELAY_PIN, !digitalRead(RELAY_PIN));
  else if (op == "pulse") { digitalWrite(RELAY_PIN, HIGH); delay(min(ms, (uint32_t)10000)); digitalWrite(RELAY_PIN, LOW); }
  else return;
  publishRelayState();
}

void connectMqtt() {
  while (!mqtt.connected()) {
    String clientId = String(DEVICE) + "-" + bootId;
    if (mqtt.connect(clientId.c_str())) {
      mqtt.subscribe(replies, 1);
      mqtt.subscribe(commands, 1);
      publishRelayState();
    } else {
      delay(2000);
    }
  }
}

// One task, re-sent under the same id until answered or out of tries.
bool submit(float value) {
  seq++;
  snprintf(pendingId, sizeof(pendingId), "%s-%s-%lu", DEVICE, bootId, (unsigned long)seq);
  answered = false;
  for (int attempt = 1; attempt <= TRIES && !answered; attempt++) {
    JsonDocument task;
    task["id"] = pendingId;
    task["kind"] = "sum";
    task["args"]["values"][0] = value;
    task["reply_to"] = replies;
    if (attempt > 1) task["attempt"] = attempt;
    char buf[256];
    size_t n = serializeJson(task, buf);
    connectMqtt();
    mqtt.publish(tasks, (const uint8_t *)buf, n, false);   // PubSubClient publishes QoS 0: the retry covers it
    uint32_t start = millis();
    while (!answered && millis() - start < REPLY_TIMEOUT_MS) {
      mqtt.loop();
      delay(10);
    }
  }
  return answered;
}

void setup() {
  Serial.begin(115200);
  pinMode(RELAY_PIN, OUTPUT);
  digitalWrite(RELAY_PIN, LOW);
  snprintf(bootId, sizeof(bootId), "%08lx", (unsigned long)esp_random());   // new ids after every reset
  snprintf(replies, sizeof(replies), "%s/replies/%s", ROOT, DEVICE);
  snprintf(commands, sizeof(commands), "%s/actuators/%s/+/set", ROOT, DEVICE);
  snprintf(tasks, sizeof(tasks), "%s/tasks/%s", ROOT, DEVICE);
  snprintf(sensor, sizeof(sensor), "%s/sensors/%s/temperature", ROOT, DEVICE);
  snprintf(relayState, sizeof(relayState), "%s/actuators/%s/relay/state", ROOT, DEVICE);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  while (WiFi.status() != WL_CONNECTED) delay(500);
  mqtt.setServer(BROKER, PORT);
  mqtt.setBufferSize(1024);
  mqtt.setCallback(onMessage);
}

void loop() {
  connectMqtt();
  float value = temperatureRead();            // the ESP32's internal sensor; replace with yours
  char reading[48];
  snprintf(reading, sizeof(reading), "{\"value\": %.2f}", value);
  mqtt.publish(sensor, reading);
  if (submit(value)) Serial.printf("reply: %s\n", answer);
  else Serial.println("no reply after every try");
  uint32_t start = millis();
  while (millis() - start < EVERY_MS) { mqtt.loop(); delay(10); }
}
