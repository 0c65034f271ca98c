// Imports nothing: src/main.ts prints --version from here before loading any other module.
export const VERSION = "0.1.0";
export const versionText = () => `Version: ${VERSION}\n`;
