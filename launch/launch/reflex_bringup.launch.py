"""Starts Reflex against a ros2_control arm: robot_state_publisher with the arm's URDF, the
Reflex node with a parameter file (`reflex ros run`, or with train:=true `reflex ros train`), and
optionally Reflex's simulated arm (`reflex ros sim-arm`) standing in for the real one.

    ros2 launch reflex_bringup reflex_bringup.launch.py                      # simulated arm
    ros2 launch reflex_bringup reflex_bringup.launch.py sim:=false \\
        params:=/path/to/my_arm.yaml urdf:=/path/to/my_arm.urdf policy:=/path/to/run/base.safetensors \\
        residual:=/path/to/run/policy.safetensors
    ros2 launch reflex_bringup reflex_bringup.launch.py train:=true out:=runs/my_arm   # training
    ros2 launch reflex_bringup reflex_bringup.launch.py sim:=false params:=... \\
        detector:=true classifier:=runs/classifier    # + a success detector (`reflex ros detect`)

With detector:=true, a success classifier watches a camera topic and publishes on
/reflex/success (config/success_detector.yaml); set the Reflex node's success_topic parameter to
that topic so episodes end on its verdict (an arm without an object tracker).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import Command, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("reflex_bringup")
    params = LaunchConfiguration("params")
    urdf = LaunchConfiguration("urdf")
    task = LaunchConfiguration("task")
    policy = LaunchConfiguration("policy")
    residual = LaunchConfiguration("residual")
    rate = LaunchConfiguration("rate")
    sim = LaunchConfiguration("sim")
    train = LaunchConfiguration("train")
    train_config = LaunchConfiguration("train_config")
    out = LaunchConfiguration("out")
    detector = LaunchConfiguration("detector")
    classifier = LaunchConfiguration("classifier")
    detector_params = LaunchConfiguration("detector_params")
    return LaunchDescription([
        DeclareLaunchArgument("params", default_value=PathJoinSubstitution([share, "config", "sim_arm.yaml"]),
                              description="The Reflex node's parameter file"),
        DeclareLaunchArgument("urdf", default_value=PathJoinSubstitution([share, "urdf", "reflex_arm.urdf"]),
                              description="The arm's URDF (robot_state_publisher and the safety filter)"),
        DeclareLaunchArgument("task", default_value="pick_cube",
                              description="Task name or task file"),
        DeclareLaunchArgument("policy", default_value="scripted",
                              description="`scripted` or a base policy file"),
        DeclareLaunchArgument("residual", default_value="",
                              description="A residual policy file (empty: none)"),
        DeclareLaunchArgument("rate", default_value="500",
                              description="Control loop rate, Hz"),
        DeclareLaunchArgument("sim", default_value="true",
                              description="Also start Reflex's simulated arm"),
        DeclareLaunchArgument("train", default_value="false",
                              description="Train the residual (`reflex ros train`) instead of running a policy"),
        DeclareLaunchArgument("train_config", default_value=PathJoinSubstitution([share, "config", "ros_train.toml"]),
                              description="The training run's configuration (train:=true)"),
        DeclareLaunchArgument("out", default_value="runs/ros_train",
                              description="The training run's directory (train:=true)"),
        DeclareLaunchArgument("detector", default_value="false",
                              description="Also start a success detector (`reflex ros detect`)"),
        DeclareLaunchArgument("classifier", default_value="runs/classifier",
                              description="The success detector's classifier directory (detector:=true)"),
        DeclareLaunchArgument("detector_params",
                              default_value=PathJoinSubstitution([share, "config", "success_detector.yaml"]),
                              description="The success detector's parameter file (detector:=true)"),
        Node(
            package="robot_state_publisher",
            executable="robot_state_publisher",
            name="robot_state_publisher",
            parameters=[{"robot_description": ParameterValue(Command(["cat ", urdf]), value_type=str)}],
        ),
        Node(
            package="reflex_bringup",
            executable="reflex",
            name="reflex_sim_arm",
            arguments=["ros", "sim-arm", "--task", task],
            condition=IfCondition(sim),
            output="screen",
        ),
        Node(
            package="reflex_bringup",
            executable="reflex",
            name="reflex",
            arguments=["ros", "run", "--task", task, "--policy", policy, "--residual", residual,
                       "--rate", rate],
            parameters=[params, {"urdf": urdf}],
            condition=UnlessCondition(train),
            output="screen",
        ),
        Node(
            package="reflex_bringup",
            executable="reflex",
            name="reflex",
            arguments=["ros", "train", "--config", train_config, "--task", task, "--out", out,
                       "--rate", rate],
            parameters=[params, {"urdf": urdf}],
            condition=IfCondition(train),
            output="screen",
        ),
        Node(
            package="reflex_bringup",
            executable="reflex",
            name="reflex_success_detector",
            arguments=["ros", "detect", "--classifier", classifier],
            parameters=[detector_params],
            condition=IfCondition(detector),
            output="screen",
        ),
    ])
