// Sends events to a cyberdrew daemon with the official inngest client, as
// the site's server code does: `node send.mjs '<sends>'`, where <sends> is
// a JSON array with one element per send() call (an event, or an array of
// events). The client finds the daemon and the event key in
// INNGEST_BASE_URL and INNGEST_EVENT_KEY. Prints the ids of each send as a
// JSON array of arrays.
import { Inngest } from "inngest";

const sends = JSON.parse(process.argv[2]);
const inngest = new Inngest({ id: "cyberdrew-dev" });
const ids = [];
for (const payload of sends) {
  const res = await inngest.send(payload);
  ids.push(res.ids);
}
console.log(JSON.stringify(ids));
