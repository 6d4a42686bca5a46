// PM2 process file for the dcb service (the seed's production set-up ran under PM2).
//   pm2 start examples/ecosystem.config.js && pm2 save
//   pm2 logs dcb      pm2 reload dcb (sends SIGINT: dcb stops gracefully)
// On Windows use "dcb.exe" as the script and Windows paths.
module.exports = {
  apps: [
    {
      name: "dcb",
      script: "./target/release/dcb",
      args: "serve",
      interpreter: "none",
      autorestart: true,
      // dcb lets running exports finish for --grace (30 s), then stops them: it exits
      // within grace + 25 s. PM2 must wait longer before it kills.
      kill_timeout: 90000,
      env: {
        DCB_CONFIG: "./examples/dcb.yaml",
        DCB_BACKUP_ROOT: "./backups",
        // Put the real URI (with its password) in the environment, not in this file:
        // DCB_MONGODB_URI: "mongodb://backup:***@db.factory.local:27017/dcMes",
      },
    },
  ],
};
