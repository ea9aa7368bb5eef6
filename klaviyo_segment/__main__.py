from klaviyo_segment.cli.app import main

main()
