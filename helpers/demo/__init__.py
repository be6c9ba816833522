"""The demo profile's stand-ins: tiny datasets in the exact on-disk layouts of ImageNet, its five
shifts and Broden (:mod:`.fixtures`), and the tiny architectures of the demo pool (:mod:`.archs`)."""
