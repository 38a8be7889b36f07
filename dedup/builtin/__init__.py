"""The built-in corpus: Twemoji rendered and captioned, with a seeded duplicate injector."""
