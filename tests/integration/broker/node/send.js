// Sends one Celery task as a Node.js service does, with celery-node, and prints its task id.
// Usage: node send.js <broker url> <queue> <task name> <kwargs as JSON> [protocol: 1 or 2]
"use strict";
const crypto = require("crypto");
const celery = require("celery-node");

const [brokerUrl, queue, taskName, kwargsJson, protocol = "2"] = process.argv.slice(2);
const client = celery.createClient(brokerUrl, brokerUrl, queue);
client.conf.TASK_PROTOCOL = Number(protocol);
const taskId = crypto.randomUUID();
const message = client.createTaskMessage(taskId, taskName, [], JSON.parse(kwargsJson));
// celery-node's own sendTaskMessage does not wait for the publish: wait for it, then leave.
client
  .isReady()
  .then(() => client.broker.publish(message.body, "", queue, message.headers, message.properties))
  .then(() => client.disconnect())
  .then(
    () => {
      console.log(taskId);
      process.exit(0);
    },
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );
