"""Print ResNet-18's receptive field, jump and output size layer by layer.

    python scripts/receptive_field.py [--model.width 64]
"""
from fastargs import Param, Section

from fast_cifar.config import POSITIVE_INT, parse_config
from fast_cifar.errors import exit_on_user_error
from fast_cifar.model import ResNet18, format_receptive_fields, receptive_fields


def declare_sections(config):
    Section("model", "ResNet-18 for 32x32 images", config_descriptor=config).params(
        width=Param(POSITIVE_INT, "channels of the first stage", default=64),
        image_size=Param(POSITIVE_INT, "input height and width", default=32),
    )


@exit_on_user_error
def main(argv=None):
    cfg = parse_config(declare_sections, argv, description=__doc__).model
    print(format_receptive_fields(receptive_fields(ResNet18(width=cfg.width), cfg.image_size)))


if __name__ == "__main__":
    main()
